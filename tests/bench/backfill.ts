#!/usr/bin/env node
/**
 * `npm run bench:backfill`: replay throughput of archived messages next to live ingest, in one run
 * on this machine (Mosquitto, Postgres and the processes share its cores).
 *
 *   - live: the ingestor (a separate process, jobs off) ingests N QoS 1 data messages published to
 *     Mosquitto at full speed, until every reading is committed — the baseline;
 *   - replay: N of the same messages sit in mqtt_message_archive (as unmatched traffic leaves them);
 *     a worker process (`bfg-ingestor worker`) replays them when their pattern is created, until
 *     backfill_run says done — archived messages/s through the same pipeline code;
 *   - replay under live traffic: the same again while the ingestor ingests N live messages of
 *     another site.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { parseArgs } from 'node:util';
import postgres, { type Sql } from 'postgres';
import { getFreePort, migrate, repoRoot, startEmbeddedPostgres } from '@bfg/local';
import { startMosquitto } from '../support/mosquitto.ts';
import { makeTempDir } from '../support/temp-dir.ts';
import { waitFor } from '../support/wait-for.ts';
import {
  BENCH_SENSORS,
  DATA_PARSER,
  DATA_PATTERN,
  dataMessages,
  peakRssMb,
  publishAll,
  type LoadMessage,
} from './support/ingest-load.ts';

const { values } = parseArgs({
  options: { messages: { type: 'string', default: '50000' }, batch: { type: 'string', default: '1000' } },
});
const N = Number(values.messages);

async function newSite(sql: Sql, slug: string, port: number, active: boolean): Promise<{ site: string; conn: string }> {
  const [site] = await sql<{ id: string }[]>`insert into site (slug, name) values (${slug}, ${slug}) returning id`;
  const [conn] = await sql<{ id: string }[]>`
    insert into mqtt_connection (site_id, host, port, is_active, clean_start)
    values (${site!.id}, '127.0.0.1', ${port}, ${active}, true) returning id`;
  return { site: site!.id, conn: conn!.id };
}

const readingsOf = async (sql: Sql, siteId: string) =>
  (
    await sql<{ n: number }[]>`
      select count(*)::int as n from sensor_reading r join sensor s on s.id = r.sensor_id where s.site_id = ${siteId}`
  )[0]!.n;

async function archive(sql: Sql, connectionId: string, messages: readonly LoadMessage[]): Promise<void> {
  for (let i = 0; i < messages.length; i += 5_000) {
    const chunk = messages.slice(i, i + 5_000);
    await sql`
      insert into mqtt_message_archive (connection_id, topic, payload, qos)
      select ${connectionId}, t, convert_to(p, 'UTF8'), 1
      from unnest(${chunk.map((m) => m.topic)}::text[], ${chunk.map((m) => m.payload)}::text[]) as v (t, p)`;
  }
}

async function main(): Promise<void> {
  const dir = await makeTempDir('bench-backfill');
  const server = await startEmbeddedPostgres({
    dataDir: path.join(dir.path, 'pg'),
    port: await getFreePort(),
    password: randomBytes(12).toString('hex'),
  });
  const mosquitto = await startMosquitto();
  const url = server.urlFor('postgres');
  const sql = postgres(url, { max: 2, onnotice: () => undefined });
  const children: ChildProcess[] = [];
  const start = (args: string[], env: Record<string, string>) => {
    const child = spawn(process.execPath, [path.join(repoRoot, 'ingestor/src/main.ts'), ...args], {
      env: {
        ...process.env,
        DATABASE_URL: url,
        BFG_LOG_DIR: path.join(dir.path, 'logs'),
        BFG_LOG_LEVEL: 'warn',
        ...env,
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    children.push(child);
    return child;
  };
  const stop = async (child: ChildProcess) => {
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
  };
  try {
    await migrate(sql);
    console.log(`bench:backfill — ${N} messages × ${BENCH_SENSORS.length} readings, batch ${values.batch}\n`);

    // Live ingest: the baseline.
    const live = await newSite(sql, 'live', mosquitto.port, true);
    await sql`insert into mqtt_topic (connection_id, pattern, parser, qos) values (${live.conn}, ${DATA_PATTERN}, ${DATA_PARSER}, 1)`;
    const ingestor = start([], { BFG_WORKER: 'false' });
    await waitFor(
      'the ingestor to subscribe',
      async () =>
        (await sql`select 1 from mqtt_connection where id = ${live.conn} and status_detail like 'subscribed%'`).length >
        0,
      { timeoutMs: 20_000 },
    );
    let t0 = performance.now();
    await publishAll(mosquitto.url, dataMessages('live', N), 1);
    await waitFor('every live reading', () => readingsOf(sql, live.site), {
      accept: (n) => n >= N * BENCH_SENSORS.length,
      timeoutMs: 600_000,
      intervalMs: 200,
    });
    const liveRate = N / ((performance.now() - t0) / 1000);

    // Replay alone, then replay while live traffic of another site flows.
    const worker = start(['worker'], { BFG_BACKFILL_BATCH: values.batch });
    const replay = async (slug: string, withLive: string | undefined) => {
      const target = await newSite(sql, slug, mosquitto.port, false);
      await archive(sql, target.conn, dataMessages(slug, N));
      t0 = performance.now();
      const [topic] = await sql<{ id: string }[]>`
        insert into mqtt_topic (connection_id, pattern, parser) values (${target.conn}, ${DATA_PATTERN}, ${DATA_PARSER})
        returning id`;
      const publishing = withLive ? publishAll(mosquitto.url, dataMessages(withLive, N), 1) : Promise.resolve();
      await waitFor(
        'the replay to finish',
        async () =>
          (await sql<{ state: string }[]>`select state from backfill_run where topic_id = ${topic!.id}`)[0]?.state,
        { accept: (state) => state === 'done' || state === 'failed', timeoutMs: 600_000, intervalMs: 200 },
      );
      const rate = N / ((performance.now() - t0) / 1000);
      await publishing;
      const stored = await readingsOf(sql, target.site);
      if (stored !== N * BENCH_SENSORS.length) throw new Error(`replay stored ${stored} readings`);
      return rate;
    };
    const alone = await replay('replay', undefined);
    const liveSite = await newSite(sql, 'live2', mosquitto.port, false);
    await sql`insert into mqtt_topic (connection_id, pattern, parser, qos) values (${liveSite.conn}, ${DATA_PATTERN}, ${DATA_PARSER}, 1)`;
    await sql`update mqtt_connection set is_active = true where id = ${liveSite.conn}`;
    await waitFor(
      'the second live site to subscribe',
      async () =>
        (await sql`select 1 from mqtt_connection where id = ${liveSite.conn} and status_detail like 'subscribed%'`)
          .length > 0,
      { timeoutMs: 20_000 },
    );
    const underLive = await replay('replay2', 'live2');

    console.log(`  live ingest (QoS 1, committed)   ${liveRate.toFixed(0).padStart(8)} msg/s   (baseline)`);
    console.log(
      `  replay of the archive            ${alone.toFixed(0).padStart(8)} msg/s   ${(alone / liveRate).toFixed(2)} × live`,
    );
    console.log(
      `  replay while live traffic flows  ${underLive.toFixed(0).padStart(8)} msg/s   ${(underLive / liveRate).toFixed(2)} × live`,
    );
    console.log(`  worker peak RSS                  ${peakRssMb(worker.pid!).toFixed(0).padStart(8)} MB`);
    console.log(`  ingestor peak RSS                ${peakRssMb(ingestor.pid!).toFixed(0).padStart(8)} MB`);
    await stop(worker);
    await stop(ingestor);
  } finally {
    for (const child of children) child.kill('SIGKILL');
    await sql.end();
    await mosquitto.stop();
    await server.stop();
    await dir.remove();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
