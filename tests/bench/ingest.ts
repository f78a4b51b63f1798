#!/usr/bin/env node
/**
 * `npm run bench:ingest`: ingest throughput, latency and backlog drain against a real broker and
 * Postgres on this machine (Mosquitto, Postgres, the publisher and the ingestor share its cores).
 *
 * Modes (`--modes throughput,latency` by default; `drain` on request):
 *   - throughput: for QoS 0 and 1, publishes N data messages (4 readings each) at full speed and
 *     measures, in the same run, a bare MQTT.js subscriber receiving them (QoS 1: acknowledging
 *     each) — the baseline — and the ingestor (a separate process, as deployed) until every reading
 *     is committed: messages/s, rows/s, the ratio, the ingestor's peak RSS, where the machine's CPU
 *     went (cores per process) and the ingestor's write transactions;
 *   - latency: publishes at steady rates (200 and 2,000 messages/s by default), each reading stamped
 *     with its publish time, and prints p50/p95/p99 of publish → row committed (the commit time
 *     Postgres records for the row's transaction, track_commit_timestamp) and publish → callback of
 *     a supabase-js client following the site's coalesced Broadcast through the local Realtime server;
 *   - drain: with the ingestor stopped, `--drain` QoS 1 messages (1,000,000) are queued at the broker
 *     for its persistent session; then the ingestor starts and drains them: rate and peak RSS.
 *
 * Options: --messages 100000 --qos 0,1 --rates 200,2000 --seconds 10 --drain 1000000
 * For looking closer (the ingestor always runs with its heap flags, ingestor/src/heap-flags.ts):
 *   BENCH_NODE_ARGS       more node arguments for the ingestor, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
 *                         (then `node tests/bench/profile-split.ts <file>`: where its time went);
 *   BENCH_INGESTOR_ENV    "NAME=value …" added to its environment (BFG_MAX_PENDING_BYTES=…);
 *   BENCH_SNAPSHOT_AT_MS  with BENCH_NODE_ARGS=--heapsnapshot-signal=SIGUSR2: a heap snapshot that
 *                         long into each throughput run;
 *   BENCH_INGESTOR_STDOUT a file for its stdout (e.g. with --trace-gc);
 *   BENCH_PGLOG           a file for Postgres' log, with statements over 30 ms and lock waits over 20 ms;
 *   BENCH_PGSTAT=1        Postgres' statements by total execution time after each throughput run and after the latency runs
 *                         (pg_stat_statements, nested statements of triggers and functions included).
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { parseArgs } from 'node:util';
import mqtt from 'mqtt';
import postgres, { type Sql } from 'postgres';
import { getFreePort, migrate, startEmbeddedPostgres, type RunningPostgres } from '@bfg/local';
import { startMosquitto, type RunningMosquitto } from '../support/mosquitto.ts';
import { makeTempDir } from '../support/temp-dir.ts';
import { waitFor } from '../support/wait-for.ts';
import {
  BENCH_SENSORS,
  DATA_PARSER,
  DATA_PATTERN,
  dataMessages,
  lazyDataMessages,
  publishAll,
  type LoadMessage,
} from './support/ingest-load.ts';
import { measureLatency } from './support/ingest-latency.ts';
import { startBenchIngestor, type BenchIngestor } from './support/bench-ingestor.ts';
import { cpuByProcess, cpuDelta, formatCores, rssMb } from './support/process-stats.ts';

const { values } = parseArgs({
  options: {
    messages: { type: 'string', default: '100000' },
    qos: { type: 'string', default: '0,1' },
    modes: { type: 'string', default: 'throughput,latency' },
    rates: { type: 'string', default: '200,2000' },
    seconds: { type: 'string', default: '10' },
    drain: { type: 'string', default: '1000000' },
  },
});
const N = Number(values.messages);
const QOS_LEVELS = values.qos.split(',').map(Number) as (0 | 1)[];
const MODES = new Set(values.modes.split(','));
const DRAIN = Number(values.drain);
const READINGS_PER_MESSAGE = BENCH_SENSORS.length;

async function baseline(url: string, filter: string, messages: LoadMessage[], qos: 0 | 1): Promise<number> {
  const sub = await mqtt.connectAsync(url, { clientId: `bench-sub-${randomBytes(3).toString('hex')}`, clean: true });
  await sub.subscribeAsync(filter, { qos });
  let received = 0;
  let start = 0;
  const done = new Promise<void>((resolve) =>
    sub.on('message', () => {
      if (received++ === 0) start = performance.now();
      if (received === messages.length) resolve();
    }),
  );
  await publishAll(url, messages, qos);
  await done;
  const seconds = (performance.now() - start) / 1000;
  await sub.endAsync();
  return messages.length / seconds;
}

interface Site {
  id: string;
  connectionId: string;
}

async function createSite(sql: Sql, slug: string, brokerPort: number, qos: 0 | 1, cleanStart = true): Promise<Site> {
  const [site] = await sql<{ id: string }[]>`insert into site (slug, name) values (${slug}, ${slug}) returning id`;
  const [conn] = await sql<{ id: string }[]>`
    insert into mqtt_connection (site_id, host, port, is_active, clean_start)
    values (${site!.id}, '127.0.0.1', ${brokerPort}, true, ${cleanStart}) returning id`;
  await sql`insert into mqtt_topic (connection_id, pattern, parser, qos)
            values (${conn!.id}, ${DATA_PATTERN}, ${DATA_PARSER}, ${qos})`;
  return { id: site!.id, connectionId: conn!.id };
}

/**
 * Readings of a site committed so far, from the five-minute rollups the same transactions keep
 * (every bench reading has a value): a few hundred rows to sum instead of a count over every
 * reading, which would compete with the ingestor for Postgres while it runs.
 */
async function committedReadings(sql: Sql, siteId: string): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    select coalesce(sum(r.n), 0)::int as n
    from sensor_reading_rollup r join sensor s on s.id = r.sensor_id where s.site_id = ${siteId}`;
  return row!.n;
}

/** Every reading exactly once (counted for real, after the run). */
async function assertStoredOnce(sql: Sql, siteId: string, expected: number): Promise<void> {
  const [row] = await sql<{ n: number }[]>`
    select count(*)::int as n from sensor_reading r join sensor s on s.id = r.sensor_id where s.site_id = ${siteId}`;
  if (row!.n !== expected) throw new Error(`expected ${expected} readings stored, found ${row!.n}`);
}

function waitSubscribed(sql: Sql, connectionId: string): Promise<unknown> {
  return waitFor(
    'the ingestor to subscribe',
    async () =>
      (
        await sql`select 1 from mqtt_connection
                  where id = ${connectionId} and status = 'connected' and status_detail like 'subscribed%'`
      ).length > 0,
    { timeoutMs: 30_000 },
  );
}

function printWrites(stats: Awaited<ReturnType<BenchIngestor['writeStats']>>, s: number) {
  if (!stats) return;
  console.log(
    `  write transactions       ${String(stats.batches).padStart(8)}   ${(stats.messages / Math.max(1, stats.batches)).toFixed(0)} messages each, ` +
      `${((100 * stats.commitSeconds) / s).toFixed(0)} % of the run inside one`,
  );
}

/** Samples `probe` every second until stopped (a scrape costs the ingestor a few ms); the peak of each figure. */
function samplePeaks(probe: () => Promise<Record<string, number> | undefined>) {
  const peaks: Record<string, number> = {};
  let running = true;
  const loop = (async () => {
    while (running) {
      for (const [k, v] of Object.entries((await probe()) ?? {})) if (!(v <= (peaks[k] ?? -1))) peaks[k] = v;
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return peaks;
    },
  };
}

/** The V8 heap at its peaks, and what the writer held (heldBytes): the per-message overhead in use. */
const formatPeaks = (peaks: Record<string, number>) =>
  `heap used ${peaks['heapUsed']?.toFixed(0)} MB of ${peaks['heapTotal']?.toFixed(0)} (young ${peaks['total:new']?.toFixed(0)}, ` +
  `old ${peaks['total:old']?.toFixed(0)}), external ${peaks['external']?.toFixed(0)} MB; ` +
  `held at most ${peaks['pendingMessages']?.toFixed(0)} messages, ${peaks['pending']?.toFixed(1)} MB by heldBytes` +
  (peaks['pendingMessages']
    ? ` (${((peaks['pending']! * 1048576) / peaks['pendingMessages']).toFixed(0)} B each)`
    : '');

async function throughput(sql: Sql, url: string, mosquitto: RunningMosquitto, qos: 0 | 1): Promise<void> {
  const slug = `bench${qos}`;
  const messages = dataMessages(slug, N);
  const raw = await baseline(mosquitto.url, `${slug}/#`, messages, qos);
  const site = await createSite(sql, slug, mosquitto.port, qos);
  const ingestor = await startBenchIngestor(url);
  try {
    await waitSubscribed(sql, site.connectionId);
    const idle = rssMb(ingestor.pid);
    const cpuBefore = cpuByProcess(ingestor.pid);
    const start = performance.now();
    const peakMemory = samplePeaks(() => ingestor.memory());
    // BENCH_NODE_ARGS=--heapsnapshot-signal=SIGUSR2 and BENCH_SNAPSHOT_AT_MS=3000: a heap snapshot mid-run.
    const snapshotAt = Number(process.env['BENCH_SNAPSHOT_AT_MS'] ?? NaN);
    if (snapshotAt >= 0) setTimeout(() => process.kill(ingestor.pid, 'SIGUSR2'), snapshotAt);
    await publishAll(mosquitto.url, messages, qos);
    await waitFor('every reading committed', () => committedReadings(sql, site.id), {
      accept: (n) => n >= N * READINGS_PER_MESSAGE,
      timeoutMs: 600_000,
      intervalMs: 50,
    });
    const seconds = (performance.now() - start) / 1000;
    const memory = await peakMemory.stop();
    const cores = formatCores(cpuDelta(cpuBefore, cpuByProcess(ingestor.pid)), seconds);
    const rss = rssMb(ingestor.pid);
    const writes = await ingestor.writeStats();
    await assertStoredOnce(sql, site.id, N * READINGS_PER_MESSAGE);

    const rate = N / seconds;
    const statements = process.env['BENCH_PGSTAT'] ? await topStatements(sql) : [];
    console.log(`QoS ${qos}:`);
    console.log(`  bare MQTT.js subscriber  ${raw.toFixed(0).padStart(8)} msg/s`);
    console.log(
      `  ingestor (committed)     ${rate.toFixed(0).padStart(8)} msg/s   ${(rate * READINGS_PER_MESSAGE).toFixed(0).padStart(8)} rows/s`,
    );
    console.log(`  ratio to bare subscriber ${(rate / raw).toFixed(2).padStart(8)}`);
    console.log(
      `  ingestor peak RSS        ${rss.peak.toFixed(0).padStart(8)} MB   (${idle.now.toFixed(0)} MB before)`,
    );
    printWrites(writes, seconds);
    console.log(`  CPU (cores)              ${cores}`);
    console.log(`  memory                   ${formatPeaks(memory)}\n`);
    for (const line of statements) console.log(`    ${line}`);
  } finally {
    await ingestor.stop();
    await sql`update mqtt_connection set is_active = false where id = ${site.connectionId}`;
  }
}

/** pg_stat_statements' heaviest statements since the last call (BENCH_PGSTAT), then a reset. */
async function topStatements(sql: Sql): Promise<string[]> {
  await sql`create extension if not exists pg_stat_statements`;
  const rows = await sql<{ ms: number; calls: number; query: string }[]>`
    select total_exec_time::float8 as ms, calls::int, regexp_replace(query, '\\s+', ' ', 'g') as query
    from pg_stat_statements order by total_exec_time desc limit 12`;
  await sql`select pg_stat_statements_reset()`;
  return rows.map((r) => `${r.ms.toFixed(0).padStart(7)} ms ${String(r.calls).padStart(6)}× ${r.query.slice(0, 110)}`);
}

/**
 * The backlog: the ingestor subscribes once (a persistent session, clean_start = false) and stops;
 * DRAIN QoS 1 messages are queued at the broker for it; then it starts and drains them.
 */
async function drain(sql: Sql, url: string, mosquitto: RunningMosquitto): Promise<void> {
  const site = await createSite(sql, 'drain', mosquitto.port, 1, false);
  const first = await startBenchIngestor(url);
  await waitSubscribed(sql, site.connectionId);
  await first.stop();
  const queueStart = performance.now();
  await publishAll(mosquitto.url, lazyDataMessages('drain', DRAIN), 1);
  const queueSeconds = (performance.now() - queueStart) / 1000;

  const start = performance.now();
  const ingestor = await startBenchIngestor(url);
  const peakMemory = samplePeaks(() => ingestor.memory());
  try {
    await waitFor('the backlog drained', () => committedReadings(sql, site.id), {
      accept: (n) => n >= DRAIN * READINGS_PER_MESSAGE,
      timeoutMs: 1_800_000,
      intervalMs: 200,
    });
    const seconds = (performance.now() - start) / 1000;
    const memory = await peakMemory.stop();
    const rss = rssMb(ingestor.pid);
    const writes = await ingestor.writeStats();
    await assertStoredOnce(sql, site.id, DRAIN * READINGS_PER_MESSAGE);
    console.log(`Drain: ${DRAIN} QoS 1 messages queued at the broker (in ${queueSeconds.toFixed(1)} s) while stopped:`);
    console.log(
      `  drained in ${seconds.toFixed(1)} s from the ingestor's start: ${(DRAIN / seconds).toFixed(0)} msg/s, ` +
        `${((DRAIN * READINGS_PER_MESSAGE) / seconds).toFixed(0)} rows/s`,
    );
    console.log(`  ingestor peak RSS        ${rss.peak.toFixed(0).padStart(8)} MB`);
    printWrites(writes, seconds);
    console.log(`  memory                   ${formatPeaks(memory)}\n`);
  } finally {
    await ingestor.stop();
    await sql`update mqtt_connection set is_active = false where id = ${site.connectionId}`;
  }
}

/**
 * Embedded Postgres with track_commit_timestamp on (a restart: it is a server start setting), so
 * the latency mode can read when each reading's transaction committed.
 */
async function startPostgres(dataDir: string): Promise<RunningPostgres> {
  const logFile = process.env['BENCH_PGLOG'];
  const fs = await import('node:fs');
  const options = {
    dataDir,
    port: await getFreePort(),
    password: randomBytes(12).toString('hex'),
    ...(logFile ? { onLog: (line: string) => fs.appendFileSync(logFile, `${line}\n`) } : {}),
  };
  const first = await startEmbeddedPostgres(options);
  const admin = postgres(first.urlFor('postgres'), { max: 1, onnotice: () => undefined });
  await admin`alter system set track_commit_timestamp = on`;
  if (process.env['BENCH_PGSTAT']) {
    await admin`alter system set shared_preload_libraries = 'pg_stat_statements'`;
    await admin`alter system set pg_stat_statements.track = 'all'`;
  }
  if (logFile) {
    await admin`alter system set log_min_duration_statement = 30`;
    await admin`alter system set log_lock_waits = on`;
    await admin`alter system set deadlock_timeout = '20ms'`;
    await admin`alter system set log_checkpoints = on`;
    await admin`alter system set log_autovacuum_min_duration = 0`;
  }
  await admin.end();
  await first.stop();
  return startEmbeddedPostgres(options);
}

async function main(): Promise<void> {
  const dir = await makeTempDir('bench');
  const server = await startPostgres(path.join(dir.path, 'pg'));
  const mosquitto = await startMosquitto({
    maxQueuedMessages: Math.max(100_000, MODES.has('drain') ? DRAIN : 0),
  });
  const url = server.urlFor('postgres');
  const sql = postgres(url, { max: 2, onnotice: () => undefined });
  try {
    await migrate(sql);
    console.log(
      `bench:ingest — ${N} messages × ${READINGS_PER_MESSAGE} readings, Mosquitto + Postgres + publisher on this machine` +
        (process.env['BENCH_INGESTOR_ENV'] ? ` (ingestor: ${process.env['BENCH_INGESTOR_ENV']})` : '') +
        '\n',
    );
    if (MODES.has('throughput')) for (const qos of QOS_LEVELS) await throughput(sql, url, mosquitto, qos);
    if (MODES.has('latency')) {
      const site = await createSite(sql, 'latency', mosquitto.port, 1);
      // Counted from here: the reset drops what the throughput runs left.
      if (process.env['BENCH_PGSTAT']) await topStatements(sql);
      await measureLatency({
        sql,
        databaseUrl: url,
        brokerUrl: mosquitto.url,
        site,
        rates: values.rates.split(',').map(Number),
        seconds: Number(values.seconds),
        start: () => startBenchIngestor(url),
        waitSubscribed: () => waitSubscribed(sql, site.connectionId),
      });
      if (process.env['BENCH_PGSTAT']) console.log(`\n${(await topStatements(sql)).join('\n')}\n`);
    }
    if (MODES.has('drain')) await drain(sql, url, mosquitto);
  } finally {
    await sql.end();
    await mosquitto.stop();
    await server.stop();
    await dir.remove();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
