import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { MqttClient } from 'mqtt';
import { matches } from 'mqtt-pattern';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getFreePort, startDemoBroker } from '@bfg/local';
import { asClaims, userClaims } from '../support/claims.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { newSite } from '../support/factories.ts';
import { startIngestor, waitForStatus, type RunningIngestor } from '../support/ingestor.ts';
import { connectClient } from '../support/mqtt-client.ts';
import { makeTempDir } from '../support/temp-dir.ts';
import { waitFor } from '../support/wait-for.ts';

/**
 * The background jobs (graphile-worker) against real Postgres and a real broker: replay of
 * archived messages when a pattern starts matching them, a replay killed mid-way, retention by
 * partitions, staleness, and a failing job's retries.
 */

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DATA_PARSER = 'bfg.datalogger-data.v1';
const DATA_PATTERN = '+site/gateway/+gateway/datalogger/+datalogger/data';

const ADMIN_ID = '00000000-0000-4000-8000-00000000000a';
const MEMBER_ID = '00000000-0000-4000-8000-00000000000b';
const count = async (query: Promise<{ n: number }[]>) => (await query)[0]!.n;
const dataPayload = (ts: number, value: number) =>
  JSON.stringify({ ts: new Date(ts).toISOString(), readings: [{ sensor: 't_air', value }] });

async function newConnection(db: TestDatabase, siteId: string, port: number, active = true): Promise<string> {
  const [conn] = await db.sql<{ id: string }[]>`
    insert into mqtt_connection (site_id, host, port, protocol_version, subscribe_filters, is_active)
    values (${siteId}, '127.0.0.1', ${port}, 4, '{#}', ${active}) returning id::text as id`;
  return conn!.id;
}

interface Run {
  state: string;
  matched: number;
  processed: number;
  failed: number;
  readings: number;
  last_error: string | null;
}
const backfillRun = async (db: TestDatabase, topicId: string): Promise<Run | undefined> =>
  (
    await db.sql<Run[]>`
      select state, matched::int, processed::int, failed::int, readings::int, last_error
      from backfill_run where topic_id = ${topicId}`
  )[0];

describe('backfill: archived messages replayed when a pattern starts matching them', () => {
  let db: TestDatabase;
  let broker: Awaited<ReturnType<typeof startDemoBroker>>;
  let run: RunningIngestor;
  let publisher: MqttClient;
  let connectionId: string;
  let slug: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    broker = await startDemoBroker({ port: await getFreePort() });
    const site = await newSite(db.sql);
    slug = site.slug;
    connectionId = await newConnection(db, site.id, broker.port);
    run = await startIngestor(db.url, { BFG_WORKER: 'true', BFG_BACKFILL_BATCH: '25' });
    await waitForStatus(db.sql, connectionId, 'connected', { detail: /subscribed/ });
    publisher = await connectClient(broker.url);
  });
  afterAll(async () => {
    await publisher?.endAsync();
    await run?.stop();
    await broker?.close();
    await db?.drop();
  });

  it('stores each archived reading once, with live traffic on the same topic during the replay, and a second edit replays nothing', async () => {
    const topic = `${slug}/gateway/gw-1/datalogger/dl-1/data`;
    const base = Date.parse('2026-11-30T00:00:00Z');
    const archived = 300;
    for (let i = 0; i < archived; i++) await publisher.publishAsync(topic, dataPayload(base + i * 1000, i), { qos: 1 });
    await waitFor(
      'the unmatched messages in the archive',
      () => count(db.sql`select count(*)::int as n from mqtt_message_archive where connection_id = ${connectionId}`),
      { accept: (n) => n === archived },
    );
    expect(await count(db.sql`select count(*)::int as n from sensor_reading`)).toBe(0);

    // The pattern, from plain SQL (as in Studio): the trigger enqueues the replay in this transaction.
    const [pattern] = await db.sql<{ id: string }[]>`
      insert into mqtt_topic (connection_id, pattern, parser) values (${connectionId}, ${DATA_PATTERN}, ${DATA_PARSER})
      returning id::text as id`;
    const topicId = pattern!.id;
    // Live traffic on the same topic while it replays: new readings, and repeats of archived ones.
    const live = 100;
    for (let i = 0; i < live; i++) {
      await publisher.publishAsync(topic, dataPayload(base + (archived + i) * 1000, archived + i), { qos: 1 });
      await publisher.publishAsync(topic, dataPayload(base + i * 1000, i), { qos: 1 });
    }

    const done = await waitFor('the replay to finish', () => backfillRun(db, topicId), {
      timeoutMs: 30_000,
      accept: (r) => r?.state === 'done',
    });
    // Live messages that arrived before the ingestor's sessions had the new pattern were archived
    // too, and replayed with the rest: every matched message is processed.
    expect(done).toMatchObject({ failed: 0, processed: done!.matched });
    expect(done!.matched).toBeGreaterThanOrEqual(archived);
    await waitFor('every reading', () => count(db.sql`select count(*)::int as n from sensor_reading`), {
      accept: (n) => n >= archived + live,
    });
    // Exactly once: one row per distinct timestamp, the archived ones and the live ones.
    const readings = await db.sql<{ n: number; distinct_ts: number; first: Date; last: Date }[]>`
      select count(*)::int as n, count(distinct ts)::int as distinct_ts, min(ts) as first, max(ts) as last
      from sensor_reading`;
    expect(readings[0]).toMatchObject({ n: archived + live, distinct_ts: archived + live });
    expect(readings[0]!.first.getTime()).toBe(base);
    expect(await count(db.sql`select count(*)::int as n from mqtt_message_archive`)).toBe(0);
    // The replay stored what live ingest had not stored already.
    expect(done!.readings).toBeLessThanOrEqual(archived);

    // A second edit (parser options) asks again: the archive is consumed, so nothing is replayed twice.
    await db.sql`update mqtt_topic set parser_config = '{"note": "edited"}' where id = ${topicId}`;
    const again = await waitFor('the second run', () => backfillRun(db, topicId), {
      timeoutMs: 30_000,
      accept: (r) => r?.state === 'done',
    });
    expect(again).toMatchObject({ matched: 0, processed: 0, readings: 0 });
    expect(await count(db.sql`select count(*)::int as n from sensor_reading`)).toBe(archived + live);
  });

  it('counts what a pattern would replay before it is saved (admins only), with the same matching as the ingestor', async () => {
    await db.sql`
      insert into mqtt_message_archive (connection_id, topic, payload)
      select ${connectionId}, t, '{}'::bytea from unnest(${[
        `${slug}/gateway/g/datalogger/d/raw`,
        `${slug}/gateway/g/datalogger/d/raw`,
        `${slug}/other`,
        '$SYS/broker/uptime',
      ]}::text[]) as t`;
    const asAdmin = (pattern: string) =>
      asClaims(
        db.sql,
        userClaims(ADMIN_ID, { admin: true }),
        (tx) => tx<{ n: string }[]>`select public.archived_message_count(${connectionId}, ${pattern})::text as n`,
      ).then((rows) => Number(rows[0]!.n));
    expect(await asAdmin('+site/gateway/+g/datalogger/+d/raw')).toBe(2);
    expect(await asAdmin(`${slug}/#`)).toBe(3);
    expect(await asAdmin('#')).toBe(3);
    expect(await asAdmin('$SYS/#')).toBe(1);
    await expect(
      asClaims(db.sql, userClaims(MEMBER_ID), (tx) => tx`select public.archived_message_count(${connectionId}, '#')`),
    ).rejects.toMatchObject({ code: '42501' });
    await db.sql`delete from mqtt_message_archive`;
  });

  it("private.mqtt_filter_regex agrees with the ingestor's matcher on every filter × topic", async () => {
    const filters = [
      ...['#', '#all', '+', '+/+', 'a/#', 'a/#rest', 'a/+', 'a/+x/c', 'a/b', 'a//b', 'a.b/#', 'a(b)/+', '[x]/*'],
      ...['$SYS/#', '+/b/#', 'a/b/#n', '+site/gateway/+gw/data', 'a\\b/+', 'é/+'],
    ];
    const topics = [
      ...['a', 'a/', 'a/b', 'a/b/c', 'a//b', 'a/x/c', 'a.b', 'aXb/c', 'a.b/c', 'a(b)/z', '[x]/*', '$SYS/x'],
      ...['x/b', 'x/b/c/d', '/b', '', 's/gateway/g1/data', 'a\\b/c', 'é/z', 'a/b/'],
    ];
    const rows = await db.sql<{ filter: string; topic: string; m: boolean }[]>`
      select f as filter, t as topic, t ~ private.mqtt_filter_regex(f) as m
      from unnest(${filters}::text[]) as f, unnest(${topics}::text[]) as t`;
    const disagreements = rows.filter(({ filter, topic, m }) => {
      const expected = matches(filter, topic) && !(topic.startsWith('$') && !filter.startsWith('$'));
      return expected !== m;
    });
    expect(disagreements).toEqual([]);
    expect(rows.length).toBe(filters.length * topics.length);
  });
});

describe('a replay killed mid-way', () => {
  let db: TestDatabase;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    for (const child of children) child.kill('SIGKILL');
    await db?.drop();
  });

  const spawnWorker = (logDir: string): ChildProcess => {
    const child = spawn(process.execPath, [path.join(repoRoot, 'ingestor/src/main.ts'), 'worker'], {
      env: {
        ...process.env,
        DATABASE_URL: db.url,
        BFG_LOG_DIR: logDir,
        BFG_LOG_LEVEL: 'warn',
        BFG_BACKFILL_BATCH: '10',
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    children.push(child);
    return child;
  };

  it('resumes in another worker and still stores each reading once', async () => {
    const logs = await makeTempDir('worker-logs');
    const site = await newSite(db.sql);
    // Inactive: only the worker touches this connection's archive.
    const connectionId = await newConnection(db, site.id, 1, false);
    const total = 3_000;
    const base = Date.parse('2026-11-29T00:00:00Z');
    await db.sql`
      insert into mqtt_message_archive (connection_id, topic, payload, qos, received_at)
      select ${connectionId}, ${`${site.slug}/gateway/gw/datalogger/dl/data`},
             convert_to(json_build_object('ts', to_char(to_timestamp(${base / 1000} + i) at time zone 'UTC',
               'YYYY-MM-DD"T"HH24:MI:SS"Z"'), 'readings', json_build_array(json_build_object('sensor', 's1', 'value', i)))::text, 'UTF8'),
             1, now()
      from generate_series(0, ${total - 1}) as i`;
    const first = spawnWorker(logs.path);
    const [pattern] = await db.sql<{ id: string }[]>`
      insert into mqtt_topic (connection_id, pattern, parser) values (${connectionId}, ${DATA_PATTERN}, ${DATA_PARSER})
      returning id::text as id`;
    const topicId = pattern!.id;
    await waitFor('the replay to be under way', () => backfillRun(db, topicId), {
      timeoutMs: 30_000,
      accept: (r) => r !== undefined && r.state === 'running' && r.processed >= 200,
    });
    first.kill('SIGKILL');
    await new Promise((resolve) => first.once('exit', resolve));
    const interrupted = await backfillRun(db, topicId);
    expect(interrupted?.state).toBe('running');
    expect(interrupted!.processed).toBeLessThan(total);

    spawnWorker(logs.path);
    const done = await waitFor('the replay to finish in the second worker', () => backfillRun(db, topicId), {
      timeoutMs: 60_000,
      accept: (r) => r?.state === 'done',
    });
    expect(done).toMatchObject({ matched: total, processed: total, failed: 0, readings: total });
    const stored = await db.sql<{ n: number; distinct_ts: number }[]>`
      select count(*)::int as n, count(distinct ts)::int as distinct_ts from sensor_reading`;
    expect(stored[0]).toEqual({ n: total, distinct_ts: total });
    expect(await count(db.sql`select count(*)::int as n from mqtt_message_archive`)).toBe(0);
    await logs.remove();
  }, 120_000);
});

describe('retention, staleness and failing jobs', () => {
  let db: TestDatabase;
  let broker: Awaited<ReturnType<typeof startDemoBroker>>;
  let run: RunningIngestor;
  let connectionId: string;
  let slug: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    broker = await startDemoBroker({ port: await getFreePort() });
    const site = await newSite(db.sql);
    slug = site.slug;
    connectionId = await newConnection(db, site.id, broker.port);
    await db.sql`insert into mqtt_topic (connection_id, pattern, parser) values (${connectionId}, ${DATA_PATTERN}, ${DATA_PARSER})`;
    // Readings in an old partition (and their rollups), and in the current month.
    await db.sql`select private.create_sensor_reading_partition('2020-01-15')`;
    const [dl] = await db.sql<{ id: string }[]>`
      with g as (insert into gateway (site_id, ident) values (${site.id}, 'gw-old') returning id)
      insert into datalogger (site_id, gateway_id, ident) select ${site.id}, g.id, 'dl-old' from g returning id::text as id`;
    const [sensor] = await db.sql<{ id: string }[]>`
      insert into sensor (site_id, datalogger_id, ident) values (${site.id}, ${dl!.id}, 's') returning id::text as id`;
    await db.sql`
      insert into sensor_reading (sensor_id, ts, value)
      values (${sensor!.id}, '2020-01-20T00:00:00Z', 1), (${sensor!.id}, now() - interval '1 minute', 2)`;
    run = await startIngestor(db.url, {
      BFG_WORKER: 'true',
      BFG_READING_RETENTION_DAYS: '365',
      BFG_STALENESS_INTERVAL_S: '1',
    });
    await waitForStatus(db.sql, connectionId, 'connected', { detail: /subscribed/ });
  });
  afterAll(async () => {
    await run?.stop();
    await broker?.close();
    await db?.drop();
  });

  it('creates partitions ahead and drops an old partition whole, keeping current readings and old rollups', async () => {
    await waitFor(
      'the old partition to be dropped',
      () =>
        db.sql<{ t: string | null }[]>`select to_regclass('public.sensor_reading_2020_01')::text as t`.then(
          (r) => r[0]!.t,
        ),
      { timeoutMs: 20_000, accept: (t) => t === null },
    );
    const ahead = await db.sql<{ name: string }[]>`
      select to_char(date_trunc('month', now()) + make_interval(months => m), '"sensor_reading_"YYYY_MM') as name
      from generate_series(0, 3) as m
      where to_regclass('public.' || to_char(date_trunc('month', now()) + make_interval(months => m), '"sensor_reading_"YYYY_MM')) is null`;
    expect(ahead).toEqual([]);
    const readings = await db.sql<{ value: number }[]>`select value from sensor_reading order by ts`;
    expect(readings.map((r) => r.value)).toEqual([2]);
    expect(await count(db.sql`select count(*)::int as n from sensor_reading_rollup where bucket < '2020-02-01'`)).toBe(
      1,
    );
  });

  it('marks a datalogger that stops reporting offline within one interval of the job, and online on its next message', async () => {
    const publisher = await connectClient(broker.url);
    const topic = `${slug}/gateway/gw-1/datalogger/dl-1/data`;
    const presence = () =>
      db.sql<{ presence: string; last_seen_at: Date; changed: Date | null }[]>`
        select presence, last_seen_at, presence_changed_at as changed from datalogger where ident = 'dl-1'`.then(
        (r) => r[0],
      );
    await publisher.publishAsync(topic, dataPayload(Date.now(), 1), { qos: 1 });
    await waitFor('the datalogger', presence, { accept: (p) => p?.presence === 'online' });
    // As its info message would say: it reports every second.
    await db.sql`update datalogger set interval_s = 1 where ident = 'dl-1'`;
    // Silent for 3 × 1 s: offline by the next run of the job (every 1 s).
    const offline = await waitFor('the datalogger to go offline', presence, {
      timeoutMs: 15_000,
      accept: (p) => p?.presence === 'offline',
    });
    expect(offline!.changed!.getTime() - offline!.last_seen_at.getTime()).toBeLessThan(3_000 + 1_000 + 1_500);
    await publisher.publishAsync(topic, dataPayload(Date.now(), 2), { qos: 1 });
    await waitFor('the datalogger to be online again', presence, { accept: (p) => p?.presence === 'online' });
    await publisher.endAsync();
  });

  it('retries a failing job with backoff and shows its last error to admins only', async () => {
    await db.sql`select graphile_worker.add_job('backfill', '{"topicId": "not-a-number"}'::json, job_key := 'bad-job')`;
    const jobs = () =>
      asClaims(
        db.sql,
        userClaims(ADMIN_ID, { admin: true }),
        (tx) =>
          tx<{ attempts: number; last_error: string | null }[]>`
          select attempts, last_error from public.worker_jobs() where key = 'bad-job'`,
      );
    const failing = await waitFor('the job to be retried', jobs, {
      timeoutMs: 20_000,
      accept: (rows) => (rows[0]?.attempts ?? 0) >= 2,
    });
    expect(failing[0]!.last_error).toMatch(/topicId/);
    const asMember = await asClaims(db.sql, userClaims(MEMBER_ID), (tx) => tx`select * from public.worker_jobs()`);
    expect(asMember).toEqual([]);
  });
});
