import { randomUUID } from 'node:crypto';
import type { RealtimeChannel } from '@supabase/supabase-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { newSite } from '../support/factories.ts';
import { signJwt } from '../support/jwt.ts';
import { follow, startRealtimeFixture, type RealtimeFixture } from '../support/realtime.ts';
import { Inbox } from '../support/wait.ts';

/**
 * Who can reach whom on the local Realtime server, tried by an anonymous client, a member of
 * another site and forged requests: public and private channels of one topic are separate
 * audiences both ways; private channels carry only what the database sent or what a writer the
 * INSERT policy admits sent; forged tokens get nowhere. Non-delivery is proven by order: a later
 * allowed message arrives first (one path delivers in order), never by waiting for silence.
 */

let rt: RealtimeFixture;
beforeAll(async () => {
  rt = await startRealtimeFixture();
  // A topic members may write to, as an app would allow chat: `room:<site id>` for its members.
  await rt.db.sql`
    create policy "members write their rooms" on realtime.messages for insert to authenticated
    with check (realtime.messages.extension = 'broadcast' and realtime.topic() like 'room:%'
                and (select private.site_id_of_topic(replace(realtime.topic(), 'room:', 'site:'))) = any ((select private.member_site_ids())::bigint[]))`;
  await rt.db.sql`
    create policy "members read their rooms" on realtime.messages for select to authenticated
    using (realtime.messages.extension = 'broadcast' and realtime.topic() like 'room:%'
           and (select private.site_id_of_topic(replace(realtime.topic(), 'room:', 'site:'))) = any ((select private.member_site_ids())::bigint[]))`;
});
afterEach(() => rt.reset());
afterAll(() => rt?.close());

type Message = { event: string; payload: Record<string, unknown> };

/** Joins and collects broadcasts of every event; resolves once SUBSCRIBED (or rejects with the reason). */
async function listen(channel: RealtimeChannel): Promise<Inbox<Message>> {
  const inbox = new Inbox<Message>();
  channel.on('broadcast', { event: '*' }, (m: { event: string; payload: Record<string, unknown> }) =>
    inbox.push({ event: m.event, payload: m.payload }),
  );
  const followed = follow(channel);
  const status = await followed.statuses.next('a subscribe status', 10_000);
  if (status !== 'SUBSCRIBED') throw new Error(`${status}: ${followed.errors.at(-1)?.message ?? ''}`);
  return inbox;
}

async function joinError(channel: RealtimeChannel): Promise<string> {
  const followed = follow(channel);
  const status = await followed.statuses.next('a subscribe status', 10_000);
  expect(status).toBe('CHANNEL_ERROR');
  void channel.unsubscribe();
  return followed.errors.at(-1)?.message ?? '';
}

const dbSend = (topic: string, event: string, isPrivate: boolean, n: number) =>
  rt.db.sql`select realtime.send(${rt.db.sql.json({ n })}, ${event}, ${topic}, ${isPrivate})`;

describe('public and private channels of one topic are separate audiences', () => {
  it('in both directions, for client broadcasts and Broadcast from Database', async () => {
    const site = await newSite(rt.db.sql);
    const topic = `site:${site.id}`;
    const member = await rt.client(await rt.userToken({ member: site.id }));
    const privateInbox = await listen(member.channel(topic, { config: { private: true } }));
    const anon = await rt.client();
    const anonSender = anon.channel(topic, { config: { broadcast: { ack: true } } });
    const publicInbox = await listen(anonSender);
    const publicListener = await listen((await rt.client()).channel(topic));

    // The anonymous client's broadcast on the public `site:<id>`, acknowledged once fanned out…
    expect(await anonSender.send({ type: 'broadcast', event: 'changes', payload: { forged: true } })).toBe('ok');
    expect(await publicListener.next('the public broadcast')).toEqual({ event: 'changes', payload: { forged: true } });
    // …never reaches the private channel: the database's private message, sent after it, comes first.
    await dbSend(topic, 'changes', true, 1);
    expect(await privateInbox.next('the private database message')).toMatchObject({
      event: 'changes',
      payload: { n: 1 },
    });

    // A public message from the database reaches only the public channels; a private one after it
    // is the private channel's next message.
    await dbSend(topic, 'changes', false, 2);
    expect(await publicInbox.next('the public database message')).toMatchObject({ payload: { n: 2 } });
    await dbSend(topic, 'changes', true, 3);
    expect(await privateInbox.next('the next private message')).toMatchObject({ payload: { n: 3 } });
    await dbSend(topic, 'changes', false, 4);
    // The public side never saw n = 3.
    expect(await publicInbox.next('the next public message')).toMatchObject({ payload: { n: 4 } });
  });
});

describe('private channels carry only what the database or an allowed writer sent', () => {
  it("drops a broadcast by a reader without write permission (no ack, as Realtime), and delivers an allowed writer's", async () => {
    const site = await newSite(rt.db.sql);
    const reader = await rt.client(await rt.userToken({ member: site.id }));
    const watcher = await rt.client(await rt.userToken({ member: site.id }));
    const siteInbox = await listen(watcher.channel(`site:${site.id}`, { config: { private: true } }));
    // Members may read site:<id> but no policy lets them write it: the dashboard shows only the database's data.
    const sender = reader.channel(`site:${site.id}`, { config: { private: true, broadcast: { ack: true } } });
    await listen(sender);
    const refused = await sender.send(
      { type: 'broadcast', event: 'changes', payload: { sensors: [{ id: 1, last_value: 666 }] } },
      { timeout: 1_000 },
    );
    expect(refused).toBe('timed out');
    await dbSend(`site:${site.id}`, 'changes', true, 7);
    expect(await siteInbox.next('the database message')).toMatchObject({ payload: { n: 7 } });

    // The room policy lets members write `room:<id>`: their broadcasts go through, acknowledged.
    const room = `room:${site.id}`;
    const roomInbox = await listen(watcher.channel(room, { config: { private: true } }));
    const writer = reader.channel(room, { config: { private: true, broadcast: { ack: true } } });
    await listen(writer);
    expect(await writer.send({ type: 'broadcast', event: 'chat', payload: { text: 'hi' } })).toBe('ok');
    expect(await roomInbox.next('the allowed broadcast')).toEqual({ event: 'chat', payload: { text: 'hi' } });
  });

  it('refuses a member of another site on every route to a site channel', async () => {
    const mine = await newSite(rt.db.sql);
    const theirs = await newSite(rt.db.sql);
    const outsider = await rt.client(await rt.userToken({ member: theirs.id }));
    expect(await joinError(outsider.channel(`site:${mine.id}`, { config: { private: true } }))).toBe(
      `Unauthorized: You do not have permissions to read from this Channel topic: site:${mine.id}`,
    );
    expect(await joinError(outsider.channel(`room:${mine.id}`, { config: { private: true } }))).toBe(
      `Unauthorized: You do not have permissions to read from this Channel topic: room:${mine.id}`,
    );
    // Joined to their own room, a broadcast cannot be steered to another room's audience.
    const watcher = await rt.client(await rt.userToken({ member: mine.id }));
    const mineInbox = await listen(watcher.channel(`room:${mine.id}`, { config: { private: true } }));
    const own = outsider.channel(`room:${theirs.id}`, { config: { private: true, broadcast: { ack: true } } });
    await listen(own);
    expect(await own.send({ type: 'broadcast', event: 'chat', payload: { text: 'wrong room' } })).toBe('ok');
    await dbSend(`room:${mine.id}`, 'chat', true, 1);
    expect(await mineInbox.next('the room message')).toMatchObject({ payload: { n: 1 } });
  });

  it('refuses anonymous and forged clients on every route', async () => {
    const site = await newSite(rt.db.sql);
    const topic = `site:${site.id}`;
    const member = await rt.client(await rt.userToken({ member: site.id }));
    const inbox = await listen(member.channel(topic, { config: { private: true } }));

    // Anonymous: the anon key on a private join.
    expect(await joinError((await rt.client()).channel(topic, { config: { private: true } }))).toBe(
      `Unauthorized: You do not have permissions to read from this Channel topic: ${topic}`,
    );
    // Forged: an admin token signed with another secret, and one claiming service_role.
    const forgedAdmin = await signJwt('not-the-secret-'.repeat(3), {
      role: 'authenticated',
      sub: randomUUID(),
      app_metadata: { role: 'admin' },
    });
    expect(await joinError((await rt.client(forgedAdmin)).channel(topic, { config: { private: true } }))).toBe(
      'InvalidJWTToken: Failed to validate JWT signature',
    );
    const forgedService = await signJwt('not-the-secret-'.repeat(3), { role: 'service_role' });
    expect(await joinError((await rt.client(forgedService)).channel(topic, { config: { private: true } }))).toBe(
      'InvalidJWTToken: Failed to validate JWT signature',
    );
    // A token whose role does not exist cannot pass the policies either.
    expect(
      await joinError(
        (await rt.client(await rt.userToken({ role: 'no_such_role' }))).channel(topic, { config: { private: true } }),
      ),
    ).toBe(`Unauthorized: You do not have permissions to read from this Channel topic: ${topic}`);
    // Anonymous on postgres_changes of a table it may not read: the feed fails, nothing is sent.
    const anonFeed = follow(
      (await rt.client())
        .channel(`anon-${randomUUID()}`)
        .on(
          'postgres_changes',
          { event: '*', schema: 'public', table: 'mqtt_connection', filter: `site_id=eq.${site.id}` },
          () => undefined,
        ),
    );
    expect(await anonFeed.statuses.next('SUBSCRIBED')).toBe('SUBSCRIBED');
    await expect(anonFeed.feedLive()).rejects.toThrow(/invalid column for filter site_id/);
    // A joined public channel whose token is swapped for a forged one is closed.
    const anon = await rt.client();
    const swapped = follow(anon.channel(`swap-${randomUUID()}`));
    expect(await swapped.statuses.next('SUBSCRIBED')).toBe('SUBSCRIBED');
    await anon.realtime.setAuth(forgedAdmin);
    let shutdown = await swapped.system.next('the shutdown message');
    while (shutdown['extension'] !== 'system') shutdown = await swapped.system.next('the shutdown message');
    expect(shutdown).toMatchObject({ status: 'error', message: 'Failed to validate JWT signature' });

    // Through all of that, the member's private channel received only the database's message.
    await dbSend(topic, 'changes', true, 9);
    expect(await inbox.next('the database message')).toMatchObject({ payload: { n: 9 } });
  });
});
