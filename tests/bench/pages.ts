#!/usr/bin/env node
/**
 * `npm run bench:pages` (after `npm run build`): how long the built dashboard takes to render the
 * first screen of every page, at the volumes of issue 13 — 100,000 discovered topics, 10,000
 * parsing-log rows (and as many connection-log and audit rows) and a site of 1,000 sensors with
 * an hour of five-minute rollups — next to a baseline: the same pages of the same database before
 * it was filled (a handful of rows each). Server time is the dashboard's own `Server-Timing`
 * (hooks.server.ts: sign-in check, loads, rendering), median and slowest of --runs requests after
 * two warm-ups, signed in as an admin (who sees and counts everything; RLS on).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import postgres from 'postgres';
import { createAuthApi, getFreePort, migrate, startEmbeddedPostgres, startWebServer } from '@bfg/local';
import { signJwt } from '../support/jwt.ts';
import { makeTempDir } from '../support/temp-dir.ts';

const { values } = parseArgs({
  options: {
    topics: { type: 'string', default: '100000' },
    'parsing-log': { type: 'string', default: '10000' },
    sensors: { type: 'string', default: '1000' },
    runs: { type: 'string', default: '10' },
    /** Only the pages whose name starts with this. */
    only: { type: 'string' },
  },
});
const TOPICS = Number(values.topics);
const PARSING_ROWS = Number(values['parsing-log']);
const SENSORS = Number(values.sensors);
const RUNS = Number(values.runs);
/** The budget for a page's first screen. */
const BUDGET_MS = 300;
const OTHER_SITES = 20;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface Fixture {
  siteId: string;
  connectionId: string;
  sensorId: string;
  patternId: string;
}

/** The rows every page needs to have something to show: one site, its connection, a pattern, a sensor. */
async function smallFixture(sql: postgres.Sql): Promise<Fixture> {
  const [site] = await sql<{ id: string }[]>`insert into site (slug, name) values ('bench', 'Bench') returning id`;
  const [conn] = await sql<{ id: string }[]>`
    insert into mqtt_connection (site_id, host, port, is_active) values (${site!.id}, '127.0.0.1', 1, false) returning id`;
  const [pattern] = await sql<{ id: string }[]>`
    insert into mqtt_topic (connection_id, pattern, parser, is_active)
    values (${conn!.id}, '+site/gateway/+gateway/datalogger/+datalogger/data', 'bfg.datalogger-data.v1', false) returning id`;
  const [gw] = await sql<
    { id: string }[]
  >`insert into gateway (site_id, ident) values (${site!.id}, 'gw-0') returning id`;
  const [dl] = await sql<{ id: string }[]>`
    insert into datalogger (site_id, gateway_id, ident, interval_s) values (${site!.id}, ${gw!.id}, 'dl-0', 5) returning id`;
  const [sensor] = await sql<{ id: string }[]>`
    insert into sensor (site_id, datalogger_id, ident, unit, last_value, last_value_at)
    values (${site!.id}, ${dl!.id}, 's-0', '°C', 20, now()) returning id`;
  await sql`insert into discovered_topic (connection_id, topic, message_count) values (${conn!.id}, 'bench/x', 1)`;
  return { siteId: site!.id, connectionId: conn!.id, sensorId: sensor!.id, patternId: pattern!.id };
}

/** Fills the volumes, in bulk statements (generate_series), as the ingestor would have over time. */
async function fill(sql: postgres.Sql, f: Fixture, accounts: number): Promise<void> {
  const perLevel = Math.max(1, Math.round(Math.cbrt(SENSORS)));
  // Other sites with a connection each (the Sites page's summaries).
  await sql`
    with s as (
      insert into site (slug, name) select 'other-' || i, 'Other ' || i from generate_series(1, ${OTHER_SITES}) i returning id)
    insert into mqtt_connection (site_id, host, port) select id, '127.0.0.1', 1 from s`;
  // 1,000 sensors: gateways × dataloggers × sensors on the bench site.
  await sql`
    insert into gateway (site_id, ident, online) select ${f.siteId}, 'gw-' || g, true from generate_series(1, ${perLevel}) g`;
  await sql`
    insert into datalogger (site_id, gateway_id, ident, interval_s)
    select ${f.siteId}, gw.id, 'dl-' || d, 5 from gateway gw cross join generate_series(1, ${perLevel}) d
    where gw.site_id = ${f.siteId} and gw.ident <> 'gw-0'`;
  await sql`
    insert into sensor (site_id, datalogger_id, ident, kind, unit, last_value, last_value_at)
    select ${f.siteId}, dl.id, 's-' || s, 'temperature', '°C', round((random() * 30)::numeric, 2), now() - random() * interval '5 seconds'
    from datalogger dl cross join generate_series(1, ${perLevel}) s
    where dl.site_id = ${f.siteId} and dl.ident <> 'dl-0'
    limit ${SENSORS}`;
  // An hour of five-minute rollups for every sensor, and an hour of readings for the chart's sensor.
  await sql`
    insert into sensor_reading_rollup (sensor_id, bucket, n, sum, min, max)
    select x.id, b, 60, round((60 * (20 + random() * 5))::numeric, 1), 15, 30
    from sensor x
    cross join generate_series(date_bin('5 minutes', now() - interval '1 hour', timestamptz 'epoch'), now(), interval '5 minutes') b
    where x.site_id = ${f.siteId}`;
  await sql`select private.ensure_sensor_reading_partitions(0)`;
  await sql`
    insert into sensor_reading (sensor_id, ts, value)
    select ${f.sensorId}, ts, 20 + sin(extract(epoch from ts) / 600)
    from generate_series(now() - interval '1 hour', now(), interval '5 seconds') ts
    on conflict do nothing`;
  // 100,000 discovered topics, seen over the last hour, most of them matched by a pattern.
  const [active] = await sql<{ id: string }[]>`
    insert into mqtt_topic (connection_id, pattern, parser) values (${f.connectionId}, '+site/gateway/+gateway/status', 'bfg.gateway-status.v1')
    returning id`;
  await sql`
    insert into discovered_topic (connection_id, topic, first_seen_at, last_seen_at, message_count, last_payload,
                                  last_payload_bytes, is_processable, matched_topic_id)
    select ${f.connectionId},
           'bench/gateway/gw-' || (i % 1000) || '/datalogger/dl-' || i || case when i % 5 = 0 then '/status' else '/data' end,
           now() - interval '1 day', now() - random() * interval '1 hour', (random() * 10000)::int,
           '{"ts":"2026-12-01T10:00:00Z","readings":[{"sensor":"t_air","value":' || i || '}]}', 64,
           i % 5 <> 0, case when i % 5 = 0 then ${active!.id}::bigint when i % 5 = 1 then null else ${f.patternId}::bigint end
    from generate_series(1, ${TOPICS}) i
    on conflict do nothing`;
  // 10,000 parsing-log rows (distinct errors) and as many connection-log rows.
  await sql`
    insert into mqtt_parsing_log (connection_id, topic, parser, kind, message, issue_paths, payload_excerpt, fingerprint,
                                  count, first_seen_at, last_seen_at)
    select ${f.connectionId}, 'bench/gateway/gw-' || (i % 1000) || '/datalogger/dl-' || i || '/data', 'bfg.datalogger-data.v1',
           (array['invalid_json', 'schema', 'unknown_parser', 'too_large', 'processing'])[1 + i % 5],
           'Expected number, received string', '{readings.0.value}', '{"readings":[{"value":"x"}]}', 'fp-' || i,
           1 + i % 50, now() - interval '2 days', now() - random() * interval '2 days'
    from generate_series(1, ${PARSING_ROWS}) i`;
  await sql`
    insert into mqtt_connection_log (connection_id, created_at, level, event, status, detail)
    select ${f.connectionId}, now() - random() * interval '7 days',
           (array['info', 'warn', 'error'])[1 + i % 3], (array['connect', 'disconnect', 'reconnect', 'error'])[1 + i % 4],
           'connected', 'bench event ' || i
    from generate_series(1, ${PARSING_ROWS}) i`;
  // 10,000 archived messages (what a pattern preview and the archived count search).
  await sql`
    insert into mqtt_message_archive (connection_id, topic, payload, received_at)
    select ${f.connectionId}, 'bench/gateway/gw-' || (i % 100) || '/datalogger/dl-' || i || '/data',
           convert_to('{"ts":1764152100,"values":{"t_air":21.4}}', 'UTF8'), now() - random() * interval '1 day'
    from generate_series(1, ${PARSING_ROWS}) i`;
  // 10,000 audit rows, as the triggers write them (inserted directly: writing as many real changes
  // would take minutes and measure the triggers, not the page).
  await sql`
    insert into audit_log (at, actor_sub, actor_email, actor_role, db_user, table_name, op, row_id, site_id, label, changes)
    select now() - random() * interval '30 days', null, case when i % 2 = 0 then 'admin-' || (i % 7) || '@bench.test' end,
           'authenticated', 'postgres', (array['site', 'mqtt_connection', 'mqtt_topic', 'site_member'])[1 + i % 4],
           'UPDATE', (i % 500)::text, ${f.siteId}::bigint, 'bench', jsonb_build_object('name', jsonb_build_object('old', 'a', 'new', 'b'))
    from generate_series(1, ${PARSING_ROWS}) i`;
  await sql`
    insert into auth.users (id, email, raw_app_meta_data)
    select gen_random_uuid(), 'user-' || i || '@bench.test', '{"provider":"email"}' from generate_series(1, ${accounts}) i`;
  // A steady state: the statistics and visibility map autovacuum would have made by now.
  for (const table of [
    'discovered_topic',
    'mqtt_parsing_log',
    'mqtt_connection_log',
    'mqtt_message_archive',
    'audit_log',
    'sensor',
    'sensor_reading_rollup',
    'site',
    'mqtt_connection',
  ])
    await sql`vacuum (analyze) ${sql(table)}`;
}

interface Page {
  name: string;
  url: string;
}

/** Every page's first screen (and the two previews the pattern forms ask while typing). */
function pagesOf(f: Fixture): Page[] {
  return [
    { name: 'Sites', url: '/' },
    { name: 'Site (1,000 sensors, sparklines)', url: `/sites/${f.siteId}` },
    { name: 'Sensor chart (1 h)', url: `/sites/${f.siteId}/sensors/${f.sensorId}` },
    { name: 'Connections', url: '/connections' },
    { name: 'Connection settings', url: `/connections/${f.connectionId}` },
    { name: 'Topics (all connections)', url: '/topics' },
    { name: 'Topics (connection, search)', url: `/topics?connection=${f.connectionId}&q=dl-4242` },
    { name: 'Topics (not processable)', url: `/topics?connection=${f.connectionId}&processable=no` },
    { name: 'Parsing log', url: '/logs' },
    { name: 'Parsing log (kind, search)', url: `/logs?tab=parsing&category=schema&q=gw-42` },
    { name: 'Connection log', url: '/logs?tab=connection' },
    { name: 'Audit', url: '/audit' },
    { name: 'Audit (who)', url: '/audit?who=admin-3@bench.test' },
    { name: 'Manage sites', url: '/admin/sites' },
    { name: 'Users', url: '/admin/users' },
    {
      name: 'API: pattern preview',
      url: `/api/pattern-preview?connection_id=${f.connectionId}&pattern=${encodeURIComponent('+site/gateway/+g/datalogger/+d/data')}&priority=50`,
    },
    {
      name: 'API: archived count',
      url: `/api/archived-count?connection_id=${f.connectionId}&pattern=${encodeURIComponent('bench/gateway/+g/datalogger/+d/data')}`,
    },
  ];
}

async function time(baseUrl: string, cookie: string, page: Page): Promise<{ server: number; total: number }> {
  const started = performance.now();
  const response = await fetch(new URL(page.url, baseUrl), { headers: { cookie }, redirect: 'manual' });
  await response.arrayBuffer();
  const total = performance.now() - started;
  if (response.status !== 200) throw new Error(`${page.url} answered ${response.status}`);
  const server = Number(/dur=([\d.]+)/.exec(response.headers.get('server-timing') ?? '')?.[1] ?? NaN);
  return { server, total };
}

async function measure(baseUrl: string, cookie: string, pages: Page[]): Promise<Map<string, number[]>> {
  const results = new Map<string, number[]>();
  for (const page of pages) {
    for (let i = 0; i < 2; i++) await time(baseUrl, cookie, page);
    const runs: number[] = [];
    for (let i = 0; i < RUNS; i++) runs.push((await time(baseUrl, cookie, page)).server);
    results.set(page.name, runs);
  }
  return results;
}

async function main(): Promise<void> {
  const dir = await makeTempDir('bench-pages');
  const pg = await startEmbeddedPostgres({
    dataDir: path.join(dir.path, 'pg'),
    port: await getFreePort(),
    password: randomBytes(12).toString('hex'),
    ephemeral: true,
  });
  const sql = postgres(pg.urlFor('postgres'), { max: 4, onnotice: () => undefined });
  const jwtSecret = randomBytes(32).toString('hex');
  // The Auth API stand-in, for the Users page (the dashboard calls its admin API).
  const authApi = createAuthApi({ sql, jwtSecret });
  const auth = http.createServer((req, res) => {
    void authApi(req, res).then((handled) => {
      if (!handled) res.writeHead(404).end();
    });
  });
  await new Promise<void>((resolve) => auth.listen(0, '127.0.0.1', resolve));
  const authUrl = `http://127.0.0.1:${(auth.address() as AddressInfo).port}`;
  let web: Awaited<ReturnType<typeof startWebServer>> | undefined;
  try {
    await migrate(sql);
    const fixture = await smallFixture(sql);
    const adminId = randomUUID();
    await sql`insert into auth.users (id, email, raw_app_meta_data) values (${adminId}, 'bench-admin@bench.test', '{"role":"admin"}')`;
    const token = await signJwt(jwtSecret, {
      sub: adminId,
      role: 'authenticated',
      email: 'bench-admin@bench.test',
      app_metadata: { role: 'admin' },
      aud: 'authenticated',
    });
    const cookie = `bfg-access-token=${token}`;
    web = await startWebServer({
      port: await getFreePort(),
      host: '127.0.0.1',
      databaseUrl: pg.urlFor('postgres'),
      jwtSecret,
      realtimeUrl: authUrl,
      log: () => undefined,
      env: { SENTRY_DSN: '', BFG_LOG_LEVEL: 'warn' },
    });
    const pages = pagesOf(fixture).filter((p) => values.only === undefined || p.name.startsWith(values.only));
    const baseline = await measure(web.url, cookie, pages);

    const started = performance.now();
    await fill(sql, fixture, 200);
    const [counts] = await sql<{ topics: number; parsing: number; sensors: number; audit: number }[]>`
      select (select count(*)::int from discovered_topic) as topics, (select count(*)::int from mqtt_parsing_log) as parsing,
             (select count(*)::int from sensor where site_id = ${fixture.siteId}) as sensors,
             (select count(*)::int from audit_log) as audit`;
    console.log(
      `bench:pages — ${counts!.topics.toLocaleString('en')} discovered topics, ${counts!.parsing.toLocaleString('en')} parsing-log rows, ` +
        `${counts!.sensors.toLocaleString('en')} sensors on one site (12 rollups each), ${counts!.audit.toLocaleString('en')} audit rows, ` +
        `${OTHER_SITES + 1} sites, 200 accounts; filled in ${Math.round((performance.now() - started) / 1000)} s. ` +
        `Server time (Server-Timing) as an admin, median / slowest of ${RUNS} after 2 warm-ups; budget ${BUDGET_MS} ms.\n`,
    );
    const loaded = await measure(web.url, cookie, pages);
    console.log('| page | baseline (empty) | at volume, median | at volume, slowest | within budget |');
    console.log('| --- | --- | --- | --- | --- |');
    let over = 0;
    for (const page of pages) {
      const base = baseline.get(page.name)!;
      const runs = loaded.get(page.name)!;
      const ok = median(runs) <= BUDGET_MS;
      if (!ok) over += 1;
      console.log(
        `| ${page.name} | ${median(base).toFixed(0)} ms | ${median(runs).toFixed(0)} ms | ${Math.max(...runs).toFixed(0)} ms | ${ok ? 'yes' : 'NO'} |`,
      );
    }
    if (over > 0) {
      console.log(`\n${over} page(s) over ${BUDGET_MS} ms.`);
      process.exitCode = 1;
    }
  } finally {
    await web?.stop();
    await new Promise((resolve) => auth.close(resolve));
    await sql.end({ timeout: 5 });
    await pg.stop();
    await dir.remove();
  }
}

await main();
