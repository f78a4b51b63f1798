#!/usr/bin/env node
/**
 * `npm run bench:chart`: how fast the sensor chart's query is over long ranges. Fills one sensor
 * with --days of readings every --interval seconds (30 days at 5 s = 518,400 rows), then, as a
 * member of the site (RLS on, the claims the dashboard sets), times the dashboard's bucketed query
 * (`loadReadings`, at most 1,500 points) for 1 h … 30 days, against the baseline of fetching the
 * same range's raw rows. Median of 5 runs each.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import path from 'node:path';
import { parseArgs } from 'node:util';
import postgres from 'postgres';
import { getFreePort, migrate, startEmbeddedPostgres } from '@bfg/local';
import { loadReadings } from '../../web/src/lib/server/queries/readings.ts';
import { makeTempDir } from '../support/temp-dir.ts';

const { values } = parseArgs({
  options: { days: { type: 'string', default: '30' }, interval: { type: 'string', default: '5' } },
});
const DAYS = Number(values.days);
const INTERVAL_S = Number(values.interval);
const RUNS = 5;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const dir = await makeTempDir('bench-chart');
  const pg = await startEmbeddedPostgres({
    dataDir: path.join(dir.path, 'pg'),
    port: await getFreePort(),
    password: randomBytes(12).toString('hex'),
  });
  const sql = postgres(pg.urlFor('postgres'), { max: 2, onnotice: () => undefined });
  try {
    await migrate(sql);
    const userId = randomUUID();
    const [site] = await sql<{ id: string }[]>`insert into site (slug, name) values ('bench', 'Bench') returning id`;
    await sql`insert into auth.users (id, email) values (${userId}, 'bench@example.com')`;
    await sql`insert into site_member (site_id, user_id) values (${site!.id}, ${userId})`;
    const [gw] = await sql<
      { id: string }[]
    >`insert into gateway (site_id, ident) values (${site!.id}, 'gw') returning id`;
    const [dl] = await sql<
      { id: string }[]
    >`insert into datalogger (site_id, gateway_id, ident) values (${site!.id}, ${gw!.id}, 'dl') returning id`;
    const [sensor] = await sql<
      { id: string }[]
    >`insert into sensor (site_id, datalogger_id, ident, unit) values (${site!.id}, ${dl!.id}, 's', '°C') returning id`;
    const sensorId = Number(sensor!.id);
    const started = performance.now();
    await sql`select private.ensure_sensor_reading_partitions(0)`;
    const [{ rows }] = await sql<[{ rows: number }]>`
      with ins as (
        insert into sensor_reading (sensor_id, ts, value)
        select ${sensorId}, ts, 20 + 5 * sin(extract(epoch from ts) / 3600)
        from generate_series(now() - make_interval(days => ${DAYS}), now(), make_interval(secs => ${INTERVAL_S})) ts
        returning 1)
      select count(*)::int as rows from ins`;
    await sql`analyze sensor_reading`;
    console.log(
      `bench:chart — 1 sensor, ${rows.toLocaleString()} readings over ${DAYS} days (every ${INTERVAL_S} s), filled in ${Math.round(performance.now() - started)} ms; RLS on (site member), median of ${RUNS} runs\n`,
    );
    const claims = JSON.stringify({ sub: userId, role: 'authenticated', app_metadata: {} });
    const asMember = <T>(work: (tx: postgres.TransactionSql) => Promise<T>) =>
      sql.begin(async (tx) => {
        await tx`select set_config('role', 'authenticated', true), set_config('request.jwt.claims', ${claims}, true)`;
        return work(tx);
      }) as Promise<T>;

    console.log('| range | raw rows (baseline) | raw fetch | chart query (bucketed) | points | bucket |');
    console.log('| --- | --- | --- | --- | --- | --- |');
    for (const [label, seconds] of [
      ['1h', 3600],
      ['24h', 86_400],
      ['7d', 604_800],
      ['30d', 2_592_000],
    ] as const) {
      if (seconds > DAYS * 86_400) continue;
      const to = new Date();
      const from = new Date(to.getTime() - seconds * 1000);
      const raw: number[] = [];
      const chart: number[] = [];
      let rawCount = 0;
      let points = 0;
      let bucketS = 0;
      for (let run = 0; run < RUNS; run++) {
        let t = performance.now();
        const rowsRaw = await asMember(
          (tx) =>
            tx`select ts, value from sensor_reading where sensor_id = ${sensorId} and ts >= ${from} and ts < ${to} order by ts`,
        );
        raw.push(performance.now() - t);
        rawCount = rowsRaw.length;
        t = performance.now();
        const series = await asMember((tx) => loadReadings(tx, sensorId, from, to));
        chart.push(performance.now() - t);
        points = series.t.length;
        bucketS = series.bucketS;
      }
      console.log(
        `| ${label} | ${rawCount.toLocaleString()} | ${median(raw).toFixed(1)} ms | ${median(chart).toFixed(1)} ms | ${points} | ${bucketS} s |`,
      );
    }
  } finally {
    await sql.end({ timeout: 5 });
    await pg.stop();
    await dir.remove();
  }
}

await main();
