import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { newDeviceTree, newSite } from '../support/factories.ts';

/**
 * The compose profile `grafana` without an engine: grafana-reader's SQL run with psql as compose
 * runs it, then every query of the provisioned dashboard run as the role Grafana uses (with
 * Grafana's macros filled in as Grafana would), against a database with two sites.
 */

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const grafanaDir = path.join(repoRoot, 'supabase/docker/grafana');
const PASSWORD = 'grafana-test-password';

interface Target {
  rawSql: string;
  format: string;
}
interface Dashboard {
  templating: { list: { name: string; query: string }[] };
  panels: { title: string; datasource: { uid: string }; targets: Target[] }[];
}
const dashboard = JSON.parse(readFileSync(path.join(grafanaDir, 'dashboards/bfg.json'), 'utf8')) as Dashboard;
const datasources = parse(readFileSync(path.join(grafanaDir, 'provisioning/datasources/bfg.yaml'), 'utf8')) as {
  datasources: { uid: string; user: string; secureJsonData: { password: string } }[];
};

let db: TestDatabase;
let grafana: postgres.Sql;
let siteA: { id: string; slug: string };

beforeAll(async () => {
  db = await createTestDatabase();
  siteA = await newSite(db.sql);
  const siteB = await newSite(db.sql, { isActive: false });
  // One sensor with one reading (just now) on each site.
  for (const site of [siteA, siteB]) await newDeviceTree(db.sql, site.id);
  const url = new URL(db.url);
  await promisify(execFile)(
    'psql',
    ['-v', 'ON_ERROR_STOP=1', '-v', `pw=${PASSWORD}`, '-f', path.join(grafanaDir, 'grafana-reader.sql')],
    {
      env: {
        ...process.env,
        PGHOST: url.hostname,
        PGPORT: url.port,
        PGUSER: decodeURIComponent(url.username),
        PGPASSWORD: decodeURIComponent(url.password),
        PGDATABASE: url.pathname.slice(1),
      },
    },
  );
  url.username = 'bfg_grafana';
  url.password = PASSWORD;
  grafana = postgres(url.toString(), { max: 1, onnotice: () => undefined });
});

afterAll(async () => {
  await grafana?.end();
  await db?.drop();
  const admin = postgres(db.url.replace(/\/[^/]+$/, '/postgres'), { max: 1, onnotice: () => undefined });
  await admin`drop role if exists bfg_grafana`.catch(() => undefined);
  await admin.end();
});

/** Grafana's macros as its Postgres data source expands them (time range: the last hour). */
function expand(sql: string, sensorId: string): string {
  return sql
    .replaceAll(/\$__timeFilter\((\w+)\)/g, `$1 between now() - interval '1 hour' and now()`)
    .replaceAll('$sensor', sensorId);
}

describe('the grafana profile', () => {
  it('provisions the data source as the role grafana-reader makes, with the password from the environment', () => {
    expect(datasources.datasources).toHaveLength(1);
    expect(datasources.datasources[0]).toMatchObject({
      user: 'bfg_grafana',
      secureJsonData: { password: '$GRAFANA_DB_PASSWORD' },
    });
    for (const panel of dashboard.panels)
      expect(panel.datasource.uid, panel.title).toBe(datasources.datasources[0]!.uid);
  });

  it('runs every dashboard query as that role, seeing the active sites only', async () => {
    const sensors = await grafana.unsafe<{ __text: string; __value: string }[]>(dashboard.templating.list[0]!.query);
    expect(sensors.map((s) => s.__text.split(' ')[0])).toEqual([siteA.slug]);
    const sensorId = String(sensors[0]!.__value);
    const results = new Map<string, unknown[]>();
    for (const panel of dashboard.panels) {
      for (const target of panel.targets)
        results.set(panel.title, await grafana.unsafe(expand(target.rawSql, sensorId)));
    }
    expect(results.get('Connection health')).toEqual([]);
    expect(results.get('Messages per minute (data messages, by site)')).toEqual([
      expect.objectContaining({ metric: siteA.slug, messages: '1' }),
    ]);
    expect(results.get(`Readings of $sensor`)).toEqual([expect.objectContaining({ value: 21.5 })]);
  });

  it('leaves the role nothing to write', async () => {
    await expect(grafana`delete from site`).rejects.toMatchObject({ code: '42501' });
  });
});
