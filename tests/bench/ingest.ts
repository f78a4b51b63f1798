#!/usr/bin/env node
/**
 * `npm run bench:ingest`: ingest throughput against a real broker and Postgres on this machine.
 *
 * For QoS 0 and QoS 1, publishes N data messages (4 readings each) at full speed to Mosquitto and
 * measures, in the same run:
 *   - baseline: a bare MQTT.js subscriber receiving them (QoS 1: acknowledging each) — the raw rate;
 *   - the ingestor (a separate process, as deployed) until every reading is committed.
 * Prints messages/s and rows/s, the ratio to the baseline, and the ingestor's peak RSS.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { parseArgs } from 'node:util';
import mqtt from 'mqtt';
import postgres from 'postgres';
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
  options: { messages: { type: 'string', default: '100000' }, qos: { type: 'string', default: '0,1' } },
});
const N = Number(values.messages);
const QOS_LEVELS = values.qos.split(',').map(Number) as (0 | 1)[];
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

async function main(): Promise<void> {
  const dir = await makeTempDir('bench');
  const server = await startEmbeddedPostgres({
    dataDir: path.join(dir.path, 'pg'),
    port: await getFreePort(),
    password: randomBytes(12).toString('hex'),
  });
  const mosquitto = await startMosquitto();
  const url = server.urlFor('postgres');
  const sql = postgres(url, { max: 2, onnotice: () => undefined });
  try {
    await migrate(sql);
    console.log(
      `bench:ingest — ${N} messages × ${READINGS_PER_MESSAGE} readings, Mosquitto + Postgres + publisher on this machine\n`,
    );
    for (const qos of QOS_LEVELS) {
      const slug = `bench${qos}`;
      const messages = dataMessages(slug, N);
      const raw = await baseline(mosquitto.url, `${slug}/#`, messages, qos);

      const [site] = await sql<{ id: string }[]>`insert into site (slug, name) values (${slug}, ${slug}) returning id`;
      const [conn] = await sql<{ id: string }[]>`
        insert into mqtt_connection (site_id, host, port, is_active, clean_start) values (${site!.id}, '127.0.0.1', ${mosquitto.port}, true, true) returning id`;
      await sql`insert into mqtt_topic (connection_id, pattern, parser, qos)
                values (${conn!.id}, ${DATA_PATTERN}, ${DATA_PARSER}, ${qos})`;
      // BENCH_NODE_ARGS (e.g. --cpu-prof) are passed to the ingestor process, for profiling.
      const nodeArgs = (process.env['BENCH_NODE_ARGS'] ?? '').split(' ').filter(Boolean);
      const child = spawn(process.execPath, [...nodeArgs, path.join(repoRoot, 'ingestor/src/main.ts')], {
        env: { ...process.env, DATABASE_URL: url, BFG_LOG_DIR: path.join(dir.path, 'logs'), BFG_LOG_LEVEL: 'warn' },
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      await waitFor(
        'the ingestor to subscribe',
        async () =>
          (
            await sql`select 1 from mqtt_connection where id = ${conn!.id} and status = 'connected' and status_detail like 'subscribed%'`
          ).length > 0,
        { timeoutMs: 20_000 },
      );
      const countRows = async () =>
        (
          await sql<{ n: number }[]>`
        select count(*)::int as n from sensor_reading r join sensor s on s.id = r.sensor_id where s.site_id = ${site!.id}`
        )[0]!.n;
      const start = performance.now();
      await publishAll(mosquitto.url, messages, qos);
      await waitFor('every reading committed', countRows, {
        accept: (n) => n >= N * READINGS_PER_MESSAGE,
        timeoutMs: 600_000,
        intervalMs: 250,
      });
      const seconds = (performance.now() - start) / 1000;
      const rss = peakRssMb(child.pid!);
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
      await sql`update mqtt_connection set is_active = false where id = ${conn!.id}`;

      const rate = N / seconds;
      console.log(`QoS ${qos}:`);
      console.log(`  bare MQTT.js subscriber  ${raw.toFixed(0).padStart(8)} msg/s`);
      console.log(
        `  ingestor (committed)     ${rate.toFixed(0).padStart(8)} msg/s   ${(rate * READINGS_PER_MESSAGE).toFixed(0).padStart(8)} rows/s`,
      );
      console.log(`  ratio to bare subscriber ${(rate / raw).toFixed(2).padStart(8)}`);
      console.log(`  ingestor peak RSS        ${rss.toFixed(0).padStart(8)} MB\n`);
    }
  } finally {
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
