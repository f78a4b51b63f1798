import postgres from 'postgres';
import { afterEach, describe, expect, it } from 'vitest';
import { getFreePort } from '@bfg/local';
import { createTestDatabase } from '../support/db.ts';
import { newSite } from '../support/factories.ts';
import { spawnIngestor, type IngestorProcess } from '../support/ingestor-process.ts';
import { startMosquitto, type RunningMosquitto } from '../support/mosquitto.ts';
import { startOwnPostgres, type OwnPostgres } from '../support/own-postgres.ts';
import { connectClient } from '../support/mqtt-client.ts';
import { startPublishing, storedPerSite, type SustainedPublisher } from '../support/sustained-publisher.ts';
import { waitFor } from '../support/wait-for.ts';

/**
 * Fault proofs (issue 14): real ingestor processes (`node ingestor/src/main.ts`), a real Mosquitto
 * with persistence, real Postgres. Each one publishes QoS 1 messages without pause to every
 * connection, does its damage mid-stream, and then checks by counts that every message the
 * broker acknowledged is stored exactly once (one reading per message, at a distinct second).
 *
 * `npm test` runs short versions (BFG_LEASE_TAKEOVER_S=5, a few seconds of traffic);
 * `npm run test:faults` (BFG_FAULTS=long) runs them longer, with more rounds of each fault, and
 * the kill and pause with the default BFG_LEASE_TAKEOVER_S of 15 s.
 */

const LONG = process.env['BFG_FAULTS'] === 'long';
/** BFG_LEASE_TAKEOVER_S of the short versions. */
const TAKEOVER_S = 5;
/** Messages per second per connection. */
const RATE = LONG ? 400 : 150;
const TIMEOUT_MS = LONG ? 600_000 : 90_000;

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
});

interface Site {
  id: string;
  slug: string;
  topic: string;
}

interface Rig {
  sql: postgres.Sql;
  url: string;
  pg: OwnPostgres | undefined;
  mosquitto: RunningMosquitto;
  sites: Site[];
  instances: Map<string, IngestorProcess>;
  takeoverS: number;
  spawn(name: string, env?: Record<string, string>): Promise<IngestorProcess>;
  publish(): Promise<SustainedPublisher>;
}

/**
 * A database (or a Postgres of the test's own, to restart), a Mosquitto with persistence,
 * `connections` sites each with an active connection (the datalogger data pattern), and the
 * named ingestor processes, started one after the other.
 */
async function rig(options: {
  connections: number;
  instances: string[];
  ownPostgres?: boolean;
  takeoverS?: number;
  shareGroup?: string;
  env?: Record<string, string>;
}): Promise<Rig> {
  let sql: postgres.Sql;
  let url: string;
  let pg: OwnPostgres | undefined;
  if (options.ownPostgres) {
    pg = await startOwnPostgres();
    cleanups.push(() => pg!.remove());
    ({ sql, url } = pg);
  } else {
    const db = await createTestDatabase();
    cleanups.push(() => db.drop());
    ({ sql, url } = db);
  }
  const mosquitto = await startMosquitto({ persistence: true });
  cleanups.push(() => mosquitto.stop());
  const sites: Site[] = [];
  for (let i = 0; i < options.connections; i++) {
    const site = await newSite(sql);
    const [conn] = await sql<{ id: string }[]>`
      insert into mqtt_connection (site_id, host, port, is_active, share_group, keepalive_s)
      values (${site.id}, '127.0.0.1', ${mosquitto.port}, true, ${options.shareGroup ?? null}, 10)
      returning id::text as id`;
    await sql`insert into mqtt_topic (connection_id, pattern, parser)
              values (${conn!.id}, '+site/gateway/+gateway/datalogger/+datalogger/data', 'bfg.datalogger-data.v1')`;
    sites.push({ id: conn!.id, slug: site.slug, topic: `${site.slug}/gateway/gw-1/datalogger/dl-1/data` });
  }
  const takeoverS = options.takeoverS ?? TAKEOVER_S;
  const instances = new Map<string, IngestorProcess>();
  const r: Rig = {
    sql,
    url,
    pg,
    mosquitto,
    sites,
    instances,
    takeoverS,
    async spawn(name, env = {}) {
      const child = await spawnIngestor(url, name, {
        BFG_LEASE_TAKEOVER_S: String(takeoverS),
        BFG_LOG_LEVEL: 'info',
        ...options.env,
        ...env,
      });
      instances.set(name, child);
      cleanups.push(() => child.stop());
      return child;
    },
    async publish() {
      const publisher = await startPublishing(
        mosquitto.url,
        sites.map((s) => s.topic),
        { ratePerS: RATE },
      );
      cleanups.push(() => publisher.stop());
      return publisher;
    },
  };
  for (const name of options.instances) {
    await r.spawn(name);
    // Each one registered before the next starts, so the spread below is the plan's, not a race.
    await waitFor(
      `${name} to register`,
      async () => (await sql`select 1 from ingestor_instance where id = ${name}`).length,
    );
  }
  return r;
}

interface Holder {
  id: string;
  slot: number;
  owner: string | null;
  status: string;
}

/** Who holds each connection (slot 0) and each member session (slot > 0), and its status. */
async function holders(sql: postgres.Sql): Promise<Holder[]> {
  return sql<Holder[]>`
    select id::text, 0 as slot, owner_instance as owner, status from mqtt_connection
    union all
    select connection_id::text, slot, owner_instance, status from mqtt_connection_member
    order by 1, 2`;
}

/**
 * Every session connected, held by one of the running instances, each instance holding at least
 * one, and each connection subscribed: a probe published to it (on a topic no pattern matches) has
 * arrived. The broker then keeps everything published from now on.
 */
async function waitForSpread(r: Rig, options: { sessions?: number } = {}): Promise<Holder[]> {
  const running = [...r.instances.values()].filter((i) => i.running).map((i) => i.instance);
  const probe = await connectClient(r.mosquitto.url);
  try {
    return await explained(
      r,
      waitFor(
        'every session connected, spread over the instances, and subscribed',
        async () => {
          const rows = await holders(r.sql);
          const spread =
            rows.length >= (options.sessions ?? r.sites.length) &&
            rows.every((h) => h.status === 'connected' && running.includes(h.owner ?? '')) &&
            running.every((name) => rows.some((h) => h.owner === name));
          if (!spread) return undefined;
          // A probe lost before the SUBACK is simply sent again on the next look.
          await Promise.all(r.sites.map((s) => probe.publishAsync(`${s.slug}/probe`, 'probe', { qos: 1 })));
          const arrived = await r.sql<{ n: number }[]>`
            select count(*)::int as n from discovered_topic where topic = any(${r.sites.map((s) => `${s.slug}/probe`)})`;
          return arrived[0]!.n === r.sites.length ? rows : undefined;
        },
        { timeoutMs: 30_000, intervalMs: 250 },
      ) as Promise<Holder[]>,
    );
  } finally {
    await probe.endAsync();
  }
}

/** Adds what the database and the ingestors' last log lines say to a failed wait. */
async function explained<T>(r: Rig, wait: Promise<T>): Promise<T> {
  try {
    return await wait;
  } catch (err) {
    const state = {
      holders: await holders(r.sql).catch(() => []),
      leases: await r.sql`select id, owner_instance, lease_expires_at, lease_epoch, now() from mqtt_connection`.catch(
        () => [],
      ),
      instances: await r.sql`select id, heartbeat_at, lease_expires_at from ingestor_instance`.catch(() => []),
      logs: Object.fromEntries(
        [...r.instances.values()].map((i) => [
          i.instance,
          i.lines
            .slice(-25)
            .map((l) => `${JSON.stringify(l['time'])} ${JSON.stringify(l['level'])} ${JSON.stringify(l['msg'])}`),
        ]),
      ),
    };
    throw new Error(`${(err as Error).message}\n${JSON.stringify(state, null, 1)}`, { cause: err });
  }
}

/** Waits until session (id, slot) is connected under an owner `accept` takes; the milliseconds since `since`. */
async function waitForHolder(
  r: Rig,
  id: string,
  accept: (owner: string) => boolean,
  since: number,
  slot = 0,
): Promise<number> {
  await explained(
    r,
    waitFor(
      `session ${id}/${slot} to be connected under a new owner`,
      async () => {
        const h = (await holders(r.sql)).find((x) => x.id === id && x.slot === slot);
        return h !== undefined && h.owner !== null && accept(h.owner) && h.status === 'connected';
      },
      { timeoutMs: r.takeoverS * 1000 + 30_000, intervalMs: 20 },
    ),
  );
  return performance.now() - since;
}

/** Stops publishing, then waits until every message the broker acknowledged is stored, and checks: once each. */
async function expectEachStoredOnce(r: Rig, publisher: SustainedPublisher): Promise<number> {
  const published = await publisher.stop();
  const total = [...published.values()].reduce((a, b) => a + b, 0);
  const expected = (stored: Awaited<ReturnType<typeof storedPerSite>>) =>
    r.sites.every((s) => (stored.get(s.slug)?.count ?? 0) >= published.get(s.topic)!);
  const stored = await waitFor(`all ${total} messages stored`, () => storedPerSite(r.sql), {
    accept: expected,
    timeoutMs: 60_000,
    intervalMs: 100,
  });
  for (const s of r.sites) {
    const n = published.get(s.topic)!;
    expect(stored.get(s.slug), s.slug).toEqual({ count: n, distinct: n, min: 0, max: n - 1 });
  }
  return total;
}

/** Waits until the publisher has sent `count` more messages (sustained traffic during a fault). */
async function whilePublishing(publisher: SustainedPublisher, count: number): Promise<void> {
  const target = publisher.sent + count;
  await waitFor(`${count} more messages published`, () => publisher.sent >= target, {
    timeoutMs: 120_000,
    intervalMs: 20,
  });
}

/** Connection log rows since `since` (a database timestamp) of one connection. */
async function logSince(sql: postgres.Sql, id: string, since: Date) {
  return sql<{ instance: string; event: string; detail: string }[]>`
    select instance, event, detail from mqtt_connection_log
    where connection_id = ${id} and created_at > ${since} order by id`;
}

const dbNow = async (sql: postgres.Sql) => (await sql<{ now: Date }[]>`select clock_timestamp() as now`)[0]!.now;

describe('two instances, the owner dies', () => {
  it(
    'SIGKILL: the other takes the connection over within BFG_LEASE_TAKEOVER_S, every message stored once',
    async () => {
      const takeoverS = LONG ? 15 : TAKEOVER_S;
      const r = await rig({ connections: 2, instances: ['a', 'b'], takeoverS });
      await waitForSpread(r);
      const publisher = await r.publish();
      const rounds = LONG ? 3 : 1;
      const times: number[] = [];
      for (let round = 0; round < rounds; round++) {
        await whilePublishing(publisher, RATE);
        const site = r.sites[round % r.sites.length]!;
        const owner = (await holders(r.sql)).find((h) => h.id === site.id && h.slot === 0)!.owner!;
        const victim = r.instances.get(owner)!;
        const killed = performance.now();
        victim.kill('SIGKILL');
        await victim.exited;
        const ms = await waitForHolder(r, site.id, (o) => o !== owner, killed);
        times.push(ms);
        expect(ms).toBeLessThan(takeoverS * 1000);
        // Back, as a new process under the same name: it gets its share again.
        await r.spawn(owner);
        await waitForSpread(r);
      }
      const total = await expectEachStoredOnce(r, publisher);
      console.info(
        `SIGKILL (BFG_LEASE_TAKEOVER_S=${takeoverS}): taken over after ${times.map((t) => `${Math.round(t)} ms`).join(', ')}; ${total} messages, each stored once`,
      );
    },
    TIMEOUT_MS,
  );

  it(
    'SIGSTOP past the lease, then SIGCONT: the paused one stops without a fight for the broker session',
    async () => {
      const takeoverS = LONG ? 15 : TAKEOVER_S;
      const r = await rig({ connections: 2, instances: ['a', 'b'], takeoverS });
      await waitForSpread(r);
      const publisher = await r.publish();
      await whilePublishing(publisher, RATE);
      const site = r.sites[0]!;
      const owner = (await holders(r.sql)).find((h) => h.id === site.id && h.slot === 0)!.owner!;
      const paused = r.instances.get(owner)!;
      const stopped = performance.now();
      paused.kill('SIGSTOP');
      const ms = await waitForHolder(r, site.id, (o) => o !== owner, stopped);
      const newOwner = (await holders(r.sql)).find((h) => h.id === site.id && h.slot === 0)!.owner!;
      // The new owner's session took the broker session (same client id) from the paused process.
      await whilePublishing(publisher, RATE);
      const resumedAt = await dbNow(r.sql);
      paused.kill('SIGCONT');
      await paused.waitForLog(/^lease lost/);
      // Let the woken process run two of its lease rounds (its heartbeats), then look.
      const beats = async () =>
        (await r.sql<{ at: Date }[]>`select heartbeat_at as at from ingestor_instance where id = ${owner}`)[0]?.at;
      const first = await waitFor('a heartbeat after the pause', beats, {
        accept: (at) => at !== undefined && at > resumedAt,
      });
      await waitFor('another heartbeat', beats, { accept: (at) => at !== undefined && at > first! });
      const log = await logSince(r.sql, site.id, resumedAt);
      // The paused instance connected nothing again; the new owner was never pushed off.
      expect(log.filter((l) => l.instance === owner && ['connect', 'reconnect'].includes(l.event))).toEqual([]);
      expect(log.filter((l) => l.instance === newOwner && l.event === 'disconnect')).toEqual([]);
      expect(log.some((l) => l.instance === owner && /lease lost/.test(l.detail))).toBe(true);
      const total = await expectEachStoredOnce(r, publisher);
      console.info(
        `SIGSTOP (BFG_LEASE_TAKEOVER_S=${takeoverS}): taken over after ${Math.round(ms)} ms; after SIGCONT the paused instance ` +
          `closed its session without a fight; ${total} messages, each stored once`,
      );
    },
    TIMEOUT_MS,
  );

  it(
    'SIGTERM: the owner writes what it has, releases, and the other takes over at once',
    async () => {
      // Long enough a lease (3.6 s) that "before it could have run out" is far from a busy stop's second.
      const r = await rig({ connections: 2, instances: ['a', 'b'], takeoverS: 6 });
      await waitForSpread(r);
      const publisher = await r.publish();
      const rounds = LONG ? 4 : 1;
      const times: number[] = [];
      for (let round = 0; round < rounds; round++) {
        await whilePublishing(publisher, RATE);
        const site = r.sites[round % r.sites.length]!;
        const owner = (await holders(r.sql)).find((h) => h.id === site.id && h.slot === 0)!.owner!;
        const leaving = r.instances.get(owner)!;
        const lease = async () =>
          (
            await r.sql<{ owner: string | null; expires: Date | null }[]>`
              select owner_instance as owner, lease_expires_at as expires from mqtt_connection where id = ${site.id}`
          )[0]!;
        // The leaving owner renews until it releases: the latest expiry it held, in database time.
        let heldUntil = (await lease()).expires!.getTime();
        const signalled = performance.now();
        leaving.kill('SIGTERM');
        const taken = await waitFor(
          'another instance to take the released lease',
          async () => {
            const l = await lease();
            if (l.owner === owner && l.expires) heldUntil = Math.max(heldUntil, l.expires.getTime());
            return l;
          },
          {
            accept: (l) => l.owner !== null && l.owner !== owner,
            intervalMs: 10,
            timeoutMs: r.takeoverS * 1000 + 30_000,
          },
        );
        const ms = await waitForHolder(r, site.id, (o) => o !== owner, signalled);
        expect((await leaving.exited).code).toBe(0);
        times.push(ms);
        // At once: taken (database time: its new expiry less a lease) while the old lease still ran,
        // i.e. because it was released, not because it ran out — whatever the machine's load.
        const takenAt = taken.expires!.getTime() - 0.6 * r.takeoverS * 1000;
        expect(takenAt).toBeLessThan(heldUntil);
        await r.spawn(owner);
        await waitForSpread(r);
      }
      const total = await expectEachStoredOnce(r, publisher);
      console.info(
        `SIGTERM: handed over after ${times.map((t) => `${Math.round(t)} ms`).join(', ')}; ${total} messages, each stored once`,
      );
    },
    TIMEOUT_MS,
  );
});

describe('two instances through restarts', () => {
  it(
    'Postgres restarted mid-stream (longer than a lease): nothing lost, nothing twice',
    async () => {
      const r = await rig({ connections: 2, instances: ['a', 'b'], ownPostgres: true });
      await waitForSpread(r);
      const before = await r.sql<{ id: string; epoch: string }[]>`
        select id::text, lease_epoch::text as epoch from mqtt_connection order by id`;
      const publisher = await r.publish();
      const rounds = LONG ? 3 : 1;
      for (let round = 0; round < rounds; round++) {
        await whilePublishing(publisher, RATE);
        await r.pg!.stop();
        // Down for longer than a lease: 1.5 leases (0.6 × BFG_LEASE_TAKEOVER_S) of traffic.
        await whilePublishing(publisher, Math.round(RATE * r.sites.length * 0.6 * r.takeoverS * 1.5));
        await r.pg!.start();
        await waitForSpread(r);
      }
      const total = await expectEachStoredOnce(r, publisher);
      const after = await r.sql<{ id: string; epoch: string }[]>`
        select id::text, lease_epoch::text as epoch from mqtt_connection order by id`;
      const takeovers = after.filter((a, i) => a.epoch !== before[i]!.epoch).length;
      console.info(
        `Postgres restarted ${rounds}×: ${total} messages, each stored once; ${takeovers} of ${after.length} connections changed hands`,
      );
    },
    TIMEOUT_MS,
  );

  it(
    'Mosquitto restarted mid-stream (persistence on): nothing lost, nothing twice',
    async () => {
      const r = await rig({ connections: 2, instances: ['a', 'b'] });
      await waitForSpread(r);
      const publisher = await r.publish();
      const rounds = LONG ? 3 : 1;
      for (let round = 0; round < rounds; round++) {
        await whilePublishing(publisher, RATE);
        await r.mosquitto.restart();
        await waitFor('the publisher to get through again', () => publisher.acknowledged, {
          accept: (n) => n >= publisher.sent - 10 && n > 0,
          timeoutMs: 30_000,
        });
      }
      const total = await expectEachStoredOnce(r, publisher);
      console.info(`Mosquitto restarted ${rounds}×: ${total} messages, each stored once`);
    },
    TIMEOUT_MS,
  );

  it(
    'the LISTEN connection and the write connections terminated from SQL: notifications still arrive, nothing lost',
    async () => {
      const r = await rig({ connections: 2, instances: ['a', 'b'] });
      await waitForSpread(r);
      const publisher = await r.publish();
      await whilePublishing(publisher, RATE);
      // This database's ingestor backends only (the cluster is shared with other test files).
      const terminate = (which: 'listen' | 'all') => r.sql<{ pid: number }[]>`
        with ingestor as materialized (
          select pid from pg_stat_activity
          where datname = current_database() and application_name = 'bfg-ingestor' and pid <> pg_backend_pid()
            and (${which} = 'all' or query ilike 'listen%')
        )
        select pid from ingestor where pg_terminate_backend(pid)`;
      // The LISTEN connections alone: a change made now must still reach the ingestors at once
      // (the sweep is 30 s away).
      const listens = await terminate('listen');
      expect(listens.length).toBeGreaterThanOrEqual(2);
      const quiet = r.sites[1]!;
      const changed = performance.now();
      await r.sql`update mqtt_connection set is_active = false where id = ${quiet.id}`;
      await waitFor(
        'the deactivated connection to disconnect',
        async () => (await holders(r.sql)).find((h) => h.id === quiet.id && h.slot === 0)?.status,
        { accept: (s) => s === 'disconnected', timeoutMs: 10_000 },
      );
      const reacted = performance.now() - changed;
      // Everything, mid-stream: the writers' transactions fail and are retried on new connections.
      await whilePublishing(publisher, RATE);
      const rounds = LONG ? 5 : 1;
      let terminated = 0;
      for (let round = 0; round < rounds; round++) {
        terminated += (await terminate('all')).length;
        await whilePublishing(publisher, RATE);
      }
      await r.sql`update mqtt_connection set is_active = true where id = ${quiet.id}`;
      await waitForHolder(r, quiet.id, () => true, performance.now());
      const total = await expectEachStoredOnce(r, publisher);
      console.info(
        `terminated ${listens.length} LISTEN backends (a change reached the ingestors ${Math.round(reacted)} ms later), ` +
          `then ${terminated} backends in ${rounds} round(s): ${total} messages, each stored once`,
      );
    },
    TIMEOUT_MS,
  );
});

describe('a shared connection', () => {
  it(
    'is subscribed by both instances, split by the broker; one killed, its member session is taken over; each message stored once',
    async () => {
      const ports = { a: await getFreePort(), b: await getFreePort() };
      const r = await rig({ connections: 1, instances: [], shareGroup: 'bfg' });
      for (const name of ['a', 'b'] as const) await r.spawn(name, { BFG_HTTP_PORT: String(ports[name]) });
      const sessions = await waitForSpread(r, { sessions: 2 });
      expect(sessions.map((s) => s.owner).sort()).toEqual(['a', 'b']);
      const site = r.sites[0]!;
      const publisher = await r.publish();
      await whilePublishing(publisher, RATE * 2);
      // Both received part of the traffic: the broker splits it between the member sessions.
      const received = async (port: number) => {
        const body = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        const line = body.split('\n').find((l) => l.startsWith(`bfg_messages_received_total{connection="${site.id}"}`));
        return Number(line?.split(' ').pop() ?? 0);
      };
      const split = await waitFor(
        'both instances to receive messages',
        async () => [await received(ports.a), await received(ports.b)],
        {
          accept: ([a, b]) => a! > 0 && b! > 0,
        },
      );
      const victim = sessions.find((s) => s.owner === 'b')!;
      const killed = performance.now();
      r.instances.get('b')!.kill('SIGKILL');
      // Its broker session goes on receiving its share while nobody reads it: a takes it over.
      const ms = await waitForHolder(r, site.id, (o) => o === 'a', killed, victim.slot);
      expect(ms).toBeLessThan(r.takeoverS * 1000);
      await whilePublishing(publisher, RATE);
      const total = await expectEachStoredOnce(r, publisher);
      console.info(
        `shared: split ${split[0]}/${split[1]} between a and b before the kill; b's member session taken over after ` +
          `${Math.round(ms)} ms; ${total} messages, each stored once`,
      );
    },
    TIMEOUT_MS,
  );
});
