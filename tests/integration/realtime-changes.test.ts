import { randomUUID } from 'node:crypto';
import type { RealtimeChannel } from '@supabase/supabase-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { newSite } from '../support/factories.ts';
import { follow, startRealtimeFixture, type RealtimeFixture } from '../support/realtime.ts';
import { Inbox } from '../support/wait.ts';
import { waitFor } from '../support/wait-for.ts';

/**
 * postgres_changes as Supabase Realtime sends them: a bad binding fails its own subscription with
 * Realtime's system error while every other subscriber keeps receiving; column privileges and RLS
 * shape `record` and `old_record`; REPLICA IDENTITY FULL and array columns; a burst larger than
 * the dispatch queue is delivered whole with the queue bounded (the feed stops reading from
 * Postgres, which keeps the WAL); one socket's messages are handled in order.
 */

let rt: RealtimeFixture;
beforeAll(async () => {
  rt = await startRealtimeFixture();
  await rt.db.sql.unsafe(`
    create table public.rt_note (
      id bigint generated always as identity primary key,
      site_id bigint not null,
      title text not null,
      secret text,
      tags text[] not null default '{}',
      counts int[] not null default '{}',
      meta jsonb
    );
    alter table public.rt_note enable row level security;
    create policy "members read their notes" on public.rt_note for select to authenticated
      using (site_id = any ((select private.member_site_ids())::bigint[]));
    revoke all on public.rt_note from anon, authenticated;
    grant select (id, site_id, title, tags, counts, meta) on public.rt_note to authenticated;
    create table public.rt_full (id bigint primary key, site_id bigint not null, label text not null, body jsonb);
    alter table public.rt_full replica identity full;
    alter table public.rt_full enable row level security;
    create policy "members read full rows" on public.rt_full for select to authenticated
      using (site_id = any ((select private.member_site_ids())::bigint[]));
    grant select on public.rt_full to authenticated;
    create table public.rt_hidden (id bigint primary key);
    create table public.rt_burst (id bigint generated always as identity primary key, n int not null);
    alter publication supabase_realtime add table public.rt_note, public.rt_full, public.rt_burst;`);
});
afterEach(() => rt.reset());
afterAll(() => rt?.close());

type Change = { eventType: string; new: Record<string, unknown>; old: Record<string, unknown>; errors: unknown };

/** A channel following one table; resolves when its feed is live. */
async function feed(channel: RealtimeChannel, table: string, filter?: string) {
  const changes = new Inbox<Change>();
  const followed = follow(
    channel.on('postgres_changes', { event: '*', schema: 'public', table, ...(filter ? { filter } : {}) }, (p) =>
      changes.push(p as unknown as Change),
    ),
  );
  expect(await followed.statuses.next('SUBSCRIBED')).toBe('SUBSCRIBED');
  await followed.feedLive();
  return changes;
}

/** The system message a join with these bindings gets (the channel itself is SUBSCRIBED). */
async function feedError(token: string, bindings: Record<string, unknown>[]): Promise<string> {
  const channel = (await rt.client(token)).channel(`bad-${randomUUID()}`);
  for (const b of bindings) channel.on('postgres_changes', b as never, () => undefined);
  const followed = follow(channel);
  expect(await followed.statuses.next('SUBSCRIBED')).toBe('SUBSCRIBED');
  for (;;) {
    const message = await followed.system.next('the feed message');
    if (message['extension'] !== 'postgres_changes') continue;
    expect(message, JSON.stringify(bindings)).toMatchObject({ status: 'error' });
    return String(message['message']);
  }
}

describe('a bad binding fails its own subscription only', () => {
  it("answers each with Realtime's system error while a healthy subscriber keeps every change", async () => {
    const site = await newSite(rt.db.sql);
    const member = await rt.userToken({ member: site.id });
    const healthy = await feed((await rt.client(member)).channel(`ok-${randomUUID()}`), 'rt_note');
    const insert = (title: string) => rt.db.sql`insert into rt_note (site_id, title) values (${site.id}, ${title})`;
    await insert('before');
    expect((await healthy.next('the first note')).new['title']).toBe('before');

    const prefix = 'Unable to subscribe to changes with given parameters.';
    expect(await feedError(member, [{ event: 5, schema: 'public', table: 'rt_note' }])).toBe(
      'No subscription params provided. Please provide at least a `schema` or `table` to subscribe to: %{"event" => 5, "schema" => "public", "table" => "rt_note"}',
    );
    expect(await feedError(member, [{ event: '*', schema: 'public', table: 'rt_note', filter: 5 }])).toMatch(
      /^No subscription params provided\. .*"filter" => 5/,
    );
    expect(await feedError(member, [{ event: '*', schema: 'public', table: 'rt_note', filter: 'title=like.x' }])).toBe(
      'Error parsing `filter` params: ["like", "x"]',
    );
    expect(await feedError(member, [{ event: '*', schema: 'public', table: 'rt_note', filter: 'nope=eq.1' }])).toBe(
      `${prefix} An exception happened so please check your connect parameters: [event: *, schema: public, table: rt_note, filters: [{"nope", "eq", "1", false}], select: nil]. Exception: ERROR P0001 (raise_exception) invalid column for filter nope`,
    );
    // A column the role may not select is as unknown to it as a missing one.
    expect(
      await feedError(member, [{ event: '*', schema: 'public', table: 'rt_note', filter: 'secret=eq.x' }]),
    ).toMatch(/invalid column for filter secret$/);
    expect(await feedError(member, [{ event: '*', schema: 'public', table: 'rt_note', filter: 'id=eq.abc' }])).toMatch(
      /Exception: ERROR 22P02 \(invalid_text_representation\) invalid input syntax for type bigint: "abc"$/,
    );
    expect(await feedError(member, [{ event: '*', schema: 'public', table: 'rt_hidden' }])).toBe(
      `${prefix} Please check Realtime is enabled for the given connect parameters: [event: *, schema: public, table: rt_hidden, filters: [], select: nil]`,
    );
    // One bad binding among good ones fails the channel's feed, as Realtime inserts them in one go.
    expect(
      await feedError(member, [
        { event: '*', schema: 'public', table: 'rt_note' },
        { event: '*', schema: 'public', table: 'rt_hidden' },
      ]),
    ).toMatch(/table: rt_hidden/);
    expect(
      await feedError(await rt.userToken({ role: 'no_such_role' }), [
        { event: '*', schema: 'public', table: 'rt_note' },
      ]),
    ).toMatch(/Exception: ERROR 42704 \(undefined_object\) role "no_such_role" does not exist$/);

    await insert('after');
    expect((await healthy.next('the note after the bad joins')).new['title']).toBe('after');
  });
});

describe('records as Supabase sends them', () => {
  it('narrows record and columns to the selectable columns; old_record is the key; arrays and json are JSON', async () => {
    const site = await newSite(rt.db.sql);
    const changes = await feed(
      (await rt.client(await rt.userToken({ member: site.id }))).channel(`cols-${randomUUID()}`),
      'rt_note',
    );
    const [note] = await rt.db.sql<{ id: string }[]>`
      insert into rt_note (site_id, title, secret, tags, counts, meta)
      values (${site.id}, 'n', 'do not leak', '{"a b",c}', '{1,NULL,3}', '{"k":[1,2]}') returning id::text`;
    const inserted = await changes.next('the insert');
    expect(inserted.new).toEqual({
      id: Number(note!.id),
      site_id: Number(site.id),
      title: 'n',
      tags: ['a b', 'c'],
      counts: [1, null, 3],
      meta: { k: [1, 2] },
    });
    expect(inserted.errors).toBeNull();
    await rt.db.sql`update rt_note set title = 'm', secret = 'still hidden' where id = ${note!.id}`;
    const updated = await changes.next('the update');
    expect(updated.new).not.toHaveProperty('secret');
    expect(updated.old).toEqual({ id: Number(note!.id) });
    await rt.db.sql`delete from rt_note where id = ${note!.id}`;
    expect(await changes.next('the delete')).toMatchObject({
      eventType: 'DELETE',
      old: { id: Number(note!.id) },
      new: {},
    });
  });

  it('delivers REPLICA IDENTITY FULL tables: RLS on the row, full old rows on update, the key on delete', async () => {
    const site = await newSite(rt.db.sql);
    const other = await newSite(rt.db.sql);
    const changes = await feed(
      (await rt.client(await rt.userToken({ member: site.id }))).channel(`full-${randomUUID()}`),
      'rt_full',
    );
    await rt.db
      .sql`insert into rt_full (id, site_id, label, body) values (1, ${other.id}, 'not mine', '{"x":1}'), (2, ${site.id}, 'mine', '{"x":2}')`;
    expect((await changes.next('the visible insert')).new).toEqual({
      id: 2,
      site_id: Number(site.id),
      label: 'mine',
      body: { x: 2 },
    });
    await rt.db.sql`update rt_full set label = 'renamed' where id = 2`;
    const updated = await changes.next('the update');
    expect(updated.new).toMatchObject({ label: 'renamed' });
    expect(updated.old).toEqual({ id: 2, site_id: Number(site.id), label: 'mine', body: { x: 2 } });
    await rt.db.sql`delete from rt_full where id = 2`;
    // Deletes are not RLS-checked, so under RLS their old record is the primary key only.
    const deleted = await changes.next('the delete');
    expect(deleted.eventType).toBe('DELETE');
    expect(deleted.old).toEqual({ id: 2 });
  });
});

describe('a burst larger than the dispatch queue', () => {
  it('delivers a burst larger than the dispatch queue whole, with the queue bounded', async () => {
    let total = 0;
    const followed = follow(
      (await rt.client(await rt.userToken()))
        .channel(`burst-${randomUUID()}`)
        .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'rt_burst' }, () => {
          total += 1;
        }),
    );
    expect(await followed.statuses.next('SUBSCRIBED')).toBe('SUBSCRIBED');
    await followed.feedLive();
    const rows = 30_000;
    await rt.db.sql`insert into rt_burst (n) select i from generate_series(1, ${rows}) i`;
    await waitFor(`all ${rows} inserts`, () => total, { accept: (n) => n >= rows, timeoutMs: 60_000 });
    expect(total).toBe(rows);
    // HIGH_WATER (10,000) plus one part of a transaction (1,000) at most were ever queued.
    expect(rt.server.stats.peakQueued).toBeLessThanOrEqual(11_000);
  }, 90_000);
});

describe("one socket's messages in order", () => {
  /** A raw Phoenix v2 socket: what a client that does not wait for replies sends. */
  async function rawSocket(token: string) {
    const ws = new WebSocket(
      `${rt.server.url.replace('http', 'ws')}/realtime/v1/websocket?apikey=${rt.anonKey}&vsn=2.0.0`,
    );
    const all: unknown[][] = [];
    ws.onmessage = (event) => all.push(JSON.parse(String(event.data)) as unknown[]);
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error('websocket error'));
    });
    let ref = 0;
    const join = (topic: string, config: Record<string, unknown>) => {
      const r = String(++ref);
      ws.send(JSON.stringify([r, r, `realtime:${topic}`, 'phx_join', { config, access_token: token }]));
      return r;
    };
    const leave = (topic: string, joinRef: string) =>
      ws.send(JSON.stringify([joinRef, String(++ref), `realtime:${topic}`, 'phx_leave', {}]));
    /** Waits until `count` frames matching have arrived; returns the last of them. */
    const until = async (what: string, match: (frame: unknown[]) => boolean, count = 1) =>
      (await waitFor(what, () => all.filter(match), { accept: (found) => found.length >= count }))[count - 1]!;
    return { ws, all, join, leave, until };
  }
  const changesOf = (topic: string) => ({
    postgres_changes: [{ event: 'INSERT', schema: 'public', table: 'rt_note' }],
    private: false,
    topic,
  });
  const isFeedOk = (topic: string) => (f: unknown[]) =>
    f[2] === `realtime:${topic}` && f[3] === 'system' && (f[4] as { status?: string }).status === 'ok';
  const isChange = (topic: string) => (f: unknown[]) => f[2] === `realtime:${topic}` && f[3] === 'postgres_changes';

  it('a leave never overtakes its join, a second join replaces the first, and nothing leaks', async () => {
    const site = await newSite(rt.db.sql);
    const raw = await rawSocket(await rt.userToken({ member: site.id }));
    // Joined and left back to back (the join's checks are still running when the leave arrives).
    const left = `left-${randomUUID()}`;
    raw.leave(left, raw.join(left, changesOf(left)));
    // Joined twice: the second replaces the first.
    const twice = `twice-${randomUUID()}`;
    const firstRef = raw.join(twice, changesOf(twice));
    raw.join(twice, changesOf(twice));
    const sentinel = `sentinel-${randomUUID()}`;
    raw.join(sentinel, changesOf(sentinel));
    await raw.until('the twice feed', isFeedOk(twice));
    await raw.until('the sentinel feed', isFeedOk(sentinel));
    expect(raw.all.some((f) => f[2] === `realtime:${twice}` && f[3] === 'phx_close' && f[0] === firstRef)).toBe(true);

    await rt.db.sql`insert into rt_note (site_id, title) values (${site.id}, 'one')`;
    await rt.db.sql`insert into rt_note (site_id, title) values (${site.id}, 'two')`;
    await raw.until('both sentinel changes', isChange(sentinel), 2);
    // Frames of one socket go out in order: by now every frame of both changes was sent.
    expect(raw.all.filter(isChange(left))).toHaveLength(0);
    expect(raw.all.filter(isChange(twice))).toHaveLength(2);
    raw.ws.close();
  });

  it('answers a join whose authorization check fails (a role that does not exist)', async () => {
    const site = await newSite(rt.db.sql);
    const raw = await rawSocket(await rt.userToken({ role: 'no_such_role' }));
    const topic = `site:${site.id}`;
    raw.join(topic, { private: true });
    const reply = await raw.until('the join reply', (f) => f[2] === `realtime:${topic}` && f[3] === 'phx_reply');
    expect(reply[4]).toEqual({
      status: 'error',
      response: { reason: `Unauthorized: You do not have permissions to read from this Channel topic: ${topic}` },
    });
    raw.ws.close();
  });
});
