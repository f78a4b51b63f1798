import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { createClient, type RealtimeChannel, type SupabaseClient } from '@supabase/supabase-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { getFreePort, startRealtimeServer, type RealtimeServer } from '@bfg/local';
import { SiteChangeBroadcaster } from '../../ingestor/src/site-change-broadcaster.ts';
import { newUser } from '../support/claims.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { addMember, newDeviceTree, newSite } from '../support/factories.ts';
import { startIngestor, type RunningIngestor } from '../support/ingestor.ts';
import { signJwt } from '../support/jwt.ts';
import { Inbox } from '../support/wait.ts';
import { waitFor } from '../support/wait-for.ts';
import { siteChanges, type SiteChanges } from '../../web/src/lib/live/site-changes.ts';

/**
 * The site's `changes` broadcast end to end. The ingestor runs with no broker connection, so only
 * its SiteChangeBroadcaster acts: a change made with plain SQL (as an admin in Studio would) reaches
 * a member's supabase-js client, a non-member cannot join the channel, a lone change is sent at
 * once and a burst is coalesced to BFG_REALTIME_MAX_RATE messages per second.
 */

const RATE = 2;
const INTERVAL_MS = 1000 / RATE;
const secret = randomBytes(32).toString('hex');
let db: TestDatabase;
let server: RealtimeServer;
let ingestor: RunningIngestor;
let anonKey: string;
const clients: SupabaseClient[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  server = await startRealtimeServer({
    port: await getFreePort(),
    jwtSecret: secret,
    sql: db.sql,
    databaseUrl: db.url,
  });
  ingestor = await startIngestor(db.url, { BFG_REALTIME_MAX_RATE: String(RATE) });
  anonKey = await signJwt(secret, { role: 'anon' });
});
afterEach(async () => {
  for (const client of clients.splice(0)) await client.removeAllChannels();
});
afterAll(async () => {
  await ingestor?.stop();
  await server?.close();
  await db?.drop();
});

/** A supabase-js client signed in as a new user (a member of `siteId`, if given). */
async function userClient(siteId?: string): Promise<SupabaseClient> {
  const id = await newUser(db.sql);
  if (siteId) await addMember(db.sql, siteId, id);
  const token = await signJwt(secret, {
    sub: id,
    role: 'authenticated',
    email: `${id}@example.test`,
    app_metadata: { provider: 'email' },
  });
  const client = createClient(server.url, anonKey, { accessToken: () => Promise.resolve(token) });
  await client.realtime.setAuth();
  clients.push(client);
  return client;
}

function subscribe(channel: RealtimeChannel): Promise<{ status: string; error?: Error }> {
  return new Promise((resolve) => {
    channel.subscribe((state, error) => {
      const status = String(state);
      if (['SUBSCRIBED', 'CHANNEL_ERROR', 'TIMED_OUT', 'CLOSED'].includes(status))
        resolve(error ? { status, error } : { status });
    });
  });
}

/** Every message on the site's topic (any event), oldest first, with when it was sent in ms (database clock). */
async function messagesOf(siteId: string) {
  return db.sql<{ event: string; payload: Record<string, unknown>; at: number }[]>`
    select event, payload, extract(epoch from inserted_at::timestamptz)::float8 * 1000 as at
    from realtime.messages where topic = ${`site:${siteId}`} order by inserted_at, id`;
}

/**
 * Waits until the site's devices have been sent (a message is on its topic, nothing is pending in
 * the outbox) and nothing more for an interval, so that its next change is "the first after a
 * quiet period".
 */
async function quiet(siteId: string): Promise<void> {
  await waitFor(`site ${siteId} to be quiet`, async () => {
    const [row] = await db.sql<{ quiet: boolean | null }[]>`
      select max(inserted_at)::timestamptz <= clock_timestamp() - make_interval(secs => ${INTERVAL_MS / 1000})
             and not exists (select 1 from private.site_change_outbox where site_id = ${siteId}) as quiet
      from realtime.messages where topic = ${`site:${siteId}`}`;
    return row!.quiet === true;
  });
}

describe('site change broadcasts through the ingestor', () => {
  it('carries a change made with plain SQL to a member as one `changes` message; a non-member cannot join', async () => {
    const site = await newSite(db.sql);
    const tree = await newDeviceTree(db.sql, site.id);
    const member = await userClient(site.id);
    const received = new Inbox<SiteChanges>();
    const channel = member
      .channel(`site:${site.id}`, { config: { private: true } })
      .on('broadcast', { event: 'changes' }, (m: { payload: unknown }) => received.push(siteChanges.parse(m.payload)));
    expect(await subscribe(channel)).toEqual({ status: 'SUBSCRIBED' });

    // Written again until one arrives: a join may complete just before the server's replication
    // stream is ready, and Realtime replays nothing.
    let rssi = -50;
    await expect
      .poll(
        async () => {
          rssi -= 1;
          await db.sql`update gateway set rssi_dbm = ${rssi} where id = ${tree.gatewayId}`;
          for (;;) {
            const message = await received.next('a changes message', INTERVAL_MS * 3).catch(() => null);
            if (!message) return null;
            const gateway = message.gateways.find((g) => g.id === Number(tree.gatewayId));
            if (gateway?.rssi_dbm === rssi) return message;
          }
        },
        { timeout: 15_000, interval: 10 },
      )
      .toMatchObject({
        gateways: [{ id: Number(tree.gatewayId), ident: 'gw-1' }],
        removed: { gateways: [], dataloggers: [], sensors: [] },
      });

    const outsider = await userClient();
    const refused = await subscribe(outsider.channel(`site:${site.id}`, { config: { private: true } }));
    expect(refused.status).toBe('CHANNEL_ERROR');
    expect(refused.error?.message).toBe(
      `Unauthorized: You do not have permissions to read from this Channel topic: site:${site.id}`,
    );
  });

  it('sends the first change after a quiet period at once', async () => {
    const site = await newSite(db.sql);
    const tree = await newDeviceTree(db.sql, site.id);
    for (const online of [false, true]) {
      await quiet(site.id);
      const before = (await messagesOf(site.id)).length;
      const [write] = await db.sql<{ at: number }[]>`
        update gateway set online = ${online} where id = ${tree.gatewayId}
        returning extract(epoch from clock_timestamp())::float8 * 1000 as at`;
      const message = (await waitFor('the change to be sent', async () => (await messagesOf(site.id))[before]))!;
      expect(message.event).toBe('changes');
      expect(siteChanges.parse(message.payload).gateways).toMatchObject([{ online }]);
      // Sent when the commit's notification arrived, not by the sweep (every 5 s): the bound is
      // loose on purpose (a loaded CI machine), the latency itself is measured by bench:site-realtime.
      expect(message.at - write!.at, 'commit → sent (ms)').toBeLessThan(2_000);
    }
  });

  it('coalesces a burst of statements into at most 1 + elapsed × rate messages, the last with the final values', async () => {
    const site = await newSite(db.sql);
    const tree = await newDeviceTree(db.sql, site.id);
    await quiet(site.id);
    const before = (await messagesOf(site.id)).length;
    const started = Date.now();
    let value = 0;
    while (Date.now() - started < 2_000) {
      value += 1;
      await db.sql`update sensor set last_value = ${value}, last_value_at = now() where id = ${tree.sensorId}`;
    }
    const during = (await messagesOf(site.id)).slice(before);
    expect(during.length, 'messages during the burst').toBeLessThanOrEqual(1 + ((Date.now() - started) / 1000) * RATE);
    const sent = await waitFor('the final value to be sent', async () => (await messagesOf(site.id)).slice(before), {
      accept: (messages) =>
        messages.at(-1)?.event === 'changes' &&
        siteChanges.parse(messages.at(-1)!.payload).sensors[0]?.last_value === value,
    });
    const elapsedS = (Date.now() - started) / 1000;
    expect(value).toBeGreaterThan(20);
    expect(sent.length).toBeLessThanOrEqual(1 + elapsedS * RATE);
    expect(sent.every((m) => m.event === 'changes')).toBe(true);
  });
});

describe('SiteChangeBroadcaster on its own', () => {
  /** A database of its own, so the ingestor above does not flush for it. */
  async function withBroadcaster(
    options: { maxRatePerSite: number; sweepMs?: number },
    run: (own: TestDatabase, broadcaster: SiteChangeBroadcaster) => Promise<void>,
  ) {
    const own = await createTestDatabase();
    const broadcaster = new SiteChangeBroadcaster(own.sql, pino({ level: 'silent' }), options);
    try {
      await broadcaster.start();
      await run(own, broadcaster);
    } finally {
      await broadcaster.stop();
      await own.drop();
    }
  }
  const sentValues = async (sql: TestDatabase['sql'], siteId: string) =>
    (
      await sql<
        { payload: unknown }[]
      >`select payload from realtime.messages where topic = ${`site:${siteId}`} order by inserted_at, id`
    ).map((m) => siteChanges.parse(m.payload).sensors.map((s) => s.last_value));

  it('sends, when it stops, what was written right after its last message', async () => {
    await withBroadcaster({ maxRatePerSite: 2 }, async (own, broadcaster) => {
      const site = await newSite(own.sql);
      const tree = await newDeviceTree(own.sql, site.id);
      await own.sql`update sensor set last_value = 1 where id = ${tree.sensorId}`;
      await waitFor('value 1 to be sent', () => sentValues(own.sql, site.id), { accept: (v) => v.flat().includes(1) });
      // Within the interval: held for the next message, which stop() must not skip.
      await own.sql`update sensor set last_value = 2 where id = ${tree.sensorId}`;
      await broadcaster.stop();
      expect((await sentValues(own.sql, site.id)).at(-1)).toEqual([2]);
      expect(await own.sql`select * from private.site_change_outbox`).toEqual([]);
    });
  });

  it('sends a change whose notification never came on its sweep', async () => {
    await withBroadcaster({ maxRatePerSite: 4, sweepMs: 200 }, async (own) => {
      const site = await newSite(own.sql);
      const tree = await newDeviceTree(own.sql, site.id);
      await waitFor(
        'the devices to be sent',
        async () => (await own.sql`select 1 from private.site_change_outbox`).length === 0,
      );
      // An entry recorded without its NOTIFY, as when the LISTEN connection was down.
      await own.sql`alter table public.sensor disable trigger sensor_record_update`;
      await own.sql`update sensor set last_value = 7 where id = ${tree.sensorId}`;
      await own.sql`alter table public.sensor enable trigger sensor_record_update`;
      await own.sql`insert into private.site_change_outbox (site_id, entity, entity_id) values (${site.id}, 'sensor', ${tree.sensorId})`;
      await waitFor('the sweep to send it', () => sentValues(own.sql, site.id), { accept: (v) => v.at(-1)?.[0] === 7 });
    });
  });
});
