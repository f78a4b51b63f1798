import { randomBytes, randomUUID } from 'node:crypto';
import { createClient, type RealtimeChannel, type SupabaseClient } from '@supabase/supabase-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { getFreePort, startRealtimeServer, type RealtimeServer } from '@bfg/local';
import {
  backoffDelay,
  ChannelLifecycle,
  type ChannelLifecycleOptions,
  type LiveStatus,
  type RawMessage,
  type Timers,
} from '../../web/src/lib/realtime/channel-lifecycle.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { newSite } from '../support/factories.ts';
import { startFakeRealtime, type FakeJoin, type FakeRealtime } from '../support/fake-realtime.ts';
import { signJwt } from '../support/jwt.ts';
import { waitFor } from '../support/wait-for.ts';

/**
 * The dashboard's channel lifecycle (web/src/lib/realtime/channel-lifecycle.ts) with the official
 * client: the snapshot is reloaded on the feed's `system` signals, not on SUBSCRIBED; a channel the
 * server closes is rejoined with backoff; disconnect leaves nothing behind. The real local server
 * and Postgres where they show it, a bare Phoenix endpoint where the test must hold back or repeat
 * a signal that the real servers send at once.
 */

const secret = randomBytes(32).toString('hex');
let db: TestDatabase;
let server: RealtimeServer;
let fake: FakeRealtime;
let anonKey: string;
const cleanups: (() => Promise<unknown> | void)[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  server = await startRealtimeServer({
    port: await getFreePort(),
    jwtSecret: secret,
    sql: db.sql,
    databaseUrl: db.url,
  });
  fake = await startFakeRealtime();
  anonKey = await signJwt(secret, { role: 'anon', iss: 'supabase' });
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
afterAll(async () => {
  await fake?.close();
  await server?.close();
  await db?.drop();
});

/** A supabase-js client whose accessToken callback reads `token()` at every join, as the dashboard's. */
function clientFor(url: string, token: () => string): SupabaseClient {
  const client = createClient(url, anonKey, { accessToken: () => Promise.resolve(token()) });
  cleanups.push(() => client.removeAllChannels());
  return client;
}

function channelOf(client: SupabaseClient, topic: string): RealtimeChannel | undefined {
  return client.getChannels().find((c) => c.topic === `realtime:${topic}`);
}

/** Timers that know which of them are still pending, and the delay of each one set. */
function trackedTimers(): Timers & { pending(): number; delays: number[] } {
  const active = new Set<ReturnType<typeof setTimeout>>();
  const delays: number[] = [];
  return {
    delays,
    setTimeout(callback, ms) {
      delays.push(ms);
      const handle = setTimeout(() => {
        active.delete(handle);
        callback();
      }, ms);
      active.add(handle);
      return handle;
    },
    clearTimeout(handle) {
      active.delete(handle as ReturnType<typeof setTimeout>);
      clearTimeout(handle as ReturnType<typeof setTimeout>);
    },
    pending: () => active.size,
  };
}

type Options = Omit<ChannelLifecycleOptions<RawMessage>, 'client' | 'parse' | 'apply' | 'reload' | 'onStatus'> & {
  /** Reloads wait for `release()` (to see what happens while one runs). */
  holdReloads?: boolean;
  /** The first this many reloads fail (the snapshot query failed). */
  failReloads?: number;
  onStatus?: (status: LiveStatus) => void;
};

/** Connects a lifecycle that records what it does: reloads, applied batches, statuses, logs. */
function watch(client: SupabaseClient, options: Options) {
  const events: string[] = [];
  const parsed: RawMessage[] = [];
  const applied: RawMessage[] = [];
  const statuses: { status: LiveStatus; at: number }[] = [];
  const logs: string[] = [];
  const held: (() => void)[] = [];
  const timers = trackedTimers();
  const record = (...args: unknown[]) =>
    logs.push(args.map((a) => (a instanceof Error ? a.message : String(a))).join(' '));
  let reloads = 0;
  const lifecycle = new ChannelLifecycle<RawMessage>({
    timers,
    log: { warn: record, error: record },
    flushMs: 20,
    ...options,
    client,
    parse: (message) => {
      parsed.push(message);
      return message;
    },
    apply: (batch) => {
      events.push(`apply ${batch.length}`);
      applied.push(...batch);
    },
    reload: async () => {
      reloads++;
      events.push('reload');
      if (options.holdReloads) await new Promise<void>((resolve) => held.push(resolve));
      if (reloads <= (options.failReloads ?? 0)) {
        events.push('reload failed');
        throw new Error('the snapshot query failed');
      }
      events.push('reloaded');
    },
    onStatus: (status) => {
      statuses.push({ status, at: Date.now() });
      options.onStatus?.(status);
    },
  });
  lifecycle.connect();
  cleanups.push(() => lifecycle.disconnect());
  return {
    lifecycle,
    events,
    parsed,
    applied,
    statuses,
    logs,
    timers,
    get reloads() {
      return reloads;
    },
    release: () => held.splice(0).forEach((resolve) => resolve()),
    times: (status: LiveStatus) => statuses.filter((s) => s.status === status).length,
  };
}

const pgOk = (join: FakeJoin) => ({
  extension: 'postgres_changes',
  status: 'ok',
  message: 'Subscribed to PostgreSQL',
  channel: join.topic.slice('realtime:'.length),
});
const replicationOk = (join: FakeJoin) => ({
  extension: 'system',
  status: 'ok',
  message: 'Replication connection established',
  channel: join.topic.slice('realtime:'.length),
});
const siteInsert = (id: number) => ({
  ids: [1000],
  data: {
    schema: 'public',
    table: 'site',
    type: 'INSERT',
    commit_timestamp: new Date().toISOString(),
    errors: null,
    columns: [{ name: 'id', type: 'int8' }],
    record: { id },
  },
});
const recordId = (message: RawMessage | undefined) =>
  message?.kind === 'postgres' ? (message.record as { id?: unknown }).id : undefined;

/** The fake's next join, once realtime-js has taken its reply (SUBSCRIBED). */
async function joined(client: SupabaseClient, topic: string): Promise<FakeJoin> {
  const join = await fake.joins.next(`the join of ${topic}`);
  expect(join.topic).toBe(`realtime:${topic}`);
  await waitFor('SUBSCRIBED', () => channelOf(client, topic)?.state === 'joined');
  return join;
}

describe('live channel lifecycle', () => {
  it('reloads only after the feed says it is live, and applies what came before on top of the snapshot', async () => {
    const topic = `lc-${randomUUID()}`;
    const client = clientFor(fake.url, () => anonKey);
    const live = watch(client, { topic, postgresChanges: [{ table: 'site' }], holdReloads: true });
    const join = await joined(client, topic);

    // Joined, but the change feed has not said it is subscribed: a change that arrives now is
    // kept, and nothing is reloaded yet (a snapshot read now could miss writes of the next seconds).
    join.fastlane('postgres_changes', siteInsert(1));
    await waitFor('the change to reach the channel', () => live.parsed.length === 1);
    expect(live.reloads).toBe(0);
    expect(live.lifecycle.status).toBe('connecting');

    join.push('system', pgOk(join));
    await waitFor('the reload', () => live.reloads === 1);
    // Live once the reload is done, not before: until then the snapshot is older than the gap.
    expect(live.lifecycle.status).toBe('connecting');
    expect(live.applied).toEqual([]);
    live.release();
    await waitFor('the kept change', () => live.applied.length === 1);
    expect(live.lifecycle.status).toBe('live');
    expect(live.events).toEqual(['reload', 'reloaded', 'apply 1']);
  });

  it('stays reconnecting while the reload fails, retries it with backoff, and goes live when it succeeds', async () => {
    const topic = `lc-${randomUUID()}`;
    const client = clientFor(fake.url, () => anonKey);
    const live = watch(client, {
      topic,
      postgresChanges: [{ table: 'site' }],
      failReloads: 2,
      rejoin: { initialMs: 50, maxMs: 200 },
    });
    const join = await joined(client, topic);
    join.push('system', pgOk(join));
    join.fastlane('postgres_changes', siteInsert(1));
    await waitFor('the first failed reload', () => live.events.includes('reload failed'));
    expect(live.lifecycle.status).toBe('reconnecting');
    expect(live.applied).toEqual([]);
    await waitFor('the page to be live', () => live.lifecycle.status === 'live');
    expect(live.events).toEqual([
      'reload',
      'reload failed',
      'reload',
      'reload failed',
      'reload',
      'reloaded',
      'apply 1',
    ]);
  });

  it('reloads again when the feed is subscribed again without a new SUBSCRIBED', async () => {
    const topic = `lc-${randomUUID()}`;
    const client = clientFor(fake.url, () => anonKey);
    const live = watch(client, { topic, postgresChanges: [{ table: 'site' }] });
    const join = await joined(client, topic);
    join.push('system', pgOk(join));
    await waitFor('the first reload', () => live.reloads === 1);
    const channel = channelOf(client, topic);

    // Supabase restarted the feed (or a token refresh re-subscribed it): changes in between are lost.
    join.push('system', pgOk(join));
    await waitFor('the second reload', () => live.reloads === 2);
    expect(channelOf(client, topic)).toBe(channel);
    expect(channel?.joinPush.ref).toBe(join.joinRef);
    // Live once the reload is done, not before: until then the snapshot is older than the gap.
    await waitFor('the page to be live', () => live.lifecycle.status === 'live');
  });

  it('rejoins a channel the server closed at token expiry, after a backoff, with the fresh token', async () => {
    const topic = `lc-${randomUUID()}`;
    const admin = { role: 'authenticated', sub: randomUUID(), app_metadata: { role: 'admin' } };
    let token = await signJwt(secret, admin, 3);
    const fresh = await signJwt(secret, admin, 3600);
    const client = clientFor(server.url, () => token);
    const live = watch(client, {
      topic,
      postgresChanges: [{ table: 'site', event: 'INSERT' }],
      rejoin: { initialMs: 1_000, maxMs: 1_000 },
      // The dashboard's callback fetches a new token once the old one is about to expire.
      onStatus: (status) => {
        if (status === 'reconnecting') token = fresh;
      },
    });
    await waitFor('live', () => live.lifecycle.status === 'live');
    expect(live.reloads).toBe(1);
    const before = await newSite(db.sql);
    await waitFor('the insert before expiry', () => live.applied.some((m) => recordId(m) === Number(before.id)));
    const first = channelOf(client, topic);

    await waitFor('the server to close the channel', () => live.times('reconnecting') === 1, { timeoutMs: 10_000 });
    expect(live.logs.join('\n')).toMatch(/closed by the server: Token has expired \d+ seconds ago/);
    await waitFor('live again', () => live.times('live') === 2, { timeoutMs: 10_000 });
    const [closed, back] = [
      live.statuses.find((s) => s.status === 'reconnecting')!,
      live.statuses.findLast((s) => s.status === 'live')!,
    ];
    expect(back.at - closed.at).toBeGreaterThanOrEqual(500);
    expect(live.reloads).toBe(2);
    expect(channelOf(client, topic)).not.toBe(first);

    const after = await newSite(db.sql);
    await waitFor('the insert after the rejoin', () => live.applied.some((m) => recordId(m) === Number(after.id)));
  });

  it('leaves no timer and no channel when disconnected during the backoff', async () => {
    const topic = `lc-${randomUUID()}`;
    const client = clientFor(fake.url, () => anonKey);
    const live = watch(client, { topic, postgresChanges: [{ table: 'site' }], rejoin: { initialMs: 60_000 } });
    const join = await joined(client, topic);
    join.push('system', pgOk(join));
    await waitFor('live', () => live.lifecycle.status === 'live');

    // A rate limit, as Realtime closes a channel: a system error, then phx_close.
    join.push('system', {
      extension: 'system',
      status: 'error',
      message: 'Too many messages per second',
      channel: topic,
    });
    join.push('phx_close', {});
    await waitFor(
      'the rejoin to be scheduled',
      () => live.lifecycle.status === 'reconnecting' && live.timers.pending() === 1,
    );
    expect(channelOf(client, topic)).toBeUndefined();

    live.lifecycle.disconnect();
    expect(live.timers.pending()).toBe(0);
    expect(client.getChannels()).toEqual([]);
  });

  it('backs off further each time the server closes the channel soon after the rejoin', async () => {
    const topic = `lc-${randomUUID()}`;
    const client = clientFor(fake.url, () => anonKey);
    const live = watch(client, {
      topic,
      postgresChanges: [{ table: 'site' }],
      rejoin: { initialMs: 100, maxMs: 10_000 },
    });
    for (let close = 0; close < 3; close++) {
      const join = await joined(client, topic);
      join.push('system', pgOk(join));
      await waitFor('live', () => live.times('live') === close + 1);
      join.push('system', {
        extension: 'system',
        status: 'error',
        message: 'Too many messages per second',
        channel: topic,
      });
      join.push('phx_close', {});
    }
    const join = await joined(client, topic);
    join.push('system', pgOk(join));
    await waitFor('live after the third rejoin', () => live.times('live') === 4);
    // 0.5–1× of 100, 200, 400 ms: exponential, with jitter.
    expect(live.timers.delays).toHaveLength(3);
    live.timers.delays.forEach((delay, i) => {
      expect(delay).toBeGreaterThanOrEqual(50 * 2 ** i);
      expect(delay).toBeLessThanOrEqual(100 * 2 ** i);
    });
    expect(live.reloads).toBe(4);
  });

  it('is not live while the change feed reports an error, and goes live when it recovers', async () => {
    const topic = `lc-${randomUUID()}`;
    const client = clientFor(fake.url, () => anonKey);
    const live = watch(client, { topic, postgresChanges: [{ table: 'site' }] });
    const join = await joined(client, topic);
    const failed = {
      extension: 'postgres_changes',
      status: 'error',
      channel: topic,
      message:
        'Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the given connect parameters: [event: *, schema: public, table: site, filters: []]',
    };
    join.push('system', failed);
    // Frames are handled in order: once this change is parsed, the error before it was seen.
    join.fastlane('postgres_changes', siteInsert(5));
    await waitFor('the change to reach the channel', () => live.parsed.length === 1);
    expect(live.lifecycle.status).toBe('reconnecting');
    expect(live.reloads).toBe(0);
    expect(live.applied).toEqual([]);
    expect(live.logs.join('\n')).toContain('the change feed failed: Unable to subscribe');

    // Supabase retries the subscription; an ok follows when it works.
    join.push('system', pgOk(join));
    await waitFor(
      'live, and the kept change applied',
      () => live.lifecycle.status === 'live' && live.applied.length === 1,
    );

    // Failing while live: the page stops saying live, and what arrives waits for the next reload.
    join.push('system', failed);
    join.fastlane('postgres_changes', siteInsert(7));
    await waitFor('the second change to reach the channel', () => live.parsed.length === 2);
    expect(live.lifecycle.status).toBe('reconnecting');
    expect(live.applied).toHaveLength(1);
    join.push('system', pgOk(join));
    await waitFor('the second change after the reload', () => live.applied.length === 2);
    expect(live.events).toEqual(['reload', 'reloaded', 'apply 1', 'reload', 'reloaded', 'apply 1']);
  });

  it('asks for replication_ready on a private broadcast channel and waits for both feeds before reloading', async () => {
    const topic = `site:${randomUUID()}`;
    const client = clientFor(fake.url, () => anonKey);
    const live = watch(client, {
      topic,
      private: true,
      broadcastEvents: ['sensor_changed'],
      postgresChanges: [{ table: 'site' }],
    });
    const join = await joined(client, topic);
    expect(join.payload['config']).toMatchObject({ private: true, broadcast: { replication_ready: true } });

    join.push('system', pgOk(join));
    // Frames are handled in order: once the broadcast is parsed, the signal before it was seen.
    join.fastlane('broadcast', { type: 'broadcast', event: 'sensor_changed', payload: { rows: [] } });
    await waitFor('the broadcast to reach the channel', () => live.parsed.length === 1);
    expect(live.reloads).toBe(0);
    expect(live.lifecycle.status).toBe('connecting');

    join.push('system', replicationOk(join));
    await waitFor('the reload and the kept broadcast', () => live.applied.length === 1);
    expect(live.events).toEqual(['reload', 'reloaded', 'apply 1']);
    // Live once the reload is done, not before: until then the snapshot is older than the gap.
    await waitFor('the page to be live', () => live.lifecycle.status === 'live');
  });

  it("goes live on the real server's replication signal and receives Broadcast from Database", async () => {
    const site = await newSite(db.sql);
    const topic = `site:${site.id}`;
    const token = await signJwt(secret, { role: 'authenticated', sub: randomUUID(), app_metadata: { role: 'admin' } });
    const client = clientFor(server.url, () => token);
    const live = watch(client, { topic, private: true, broadcastEvents: ['probe'] });
    await waitFor('live', () => live.lifecycle.status === 'live');
    expect(live.reloads).toBe(1);
    await db.sql`select realtime.send(${db.sql.json({ n: 1 })}, 'probe', ${topic}, true)`;
    await waitFor('the broadcast', () => live.applied.length === 1);
    expect(live.applied[0]).toMatchObject({ kind: 'broadcast', event: 'probe', payload: { n: 1 } });
  });

  it('backs off exponentially with jitter, capped', () => {
    expect(backoffDelay(0, 1_000, 30_000, () => 0)).toBe(500);
    expect(backoffDelay(0, 1_000, 30_000, () => 1)).toBe(1_000);
    expect(backoffDelay(3, 1_000, 30_000, () => 1)).toBe(8_000);
    expect(backoffDelay(20, 1_000, 30_000, () => 0)).toBe(15_000);
    expect(backoffDelay(20, 1_000, 30_000, () => 1)).toBe(30_000);
  });
});
