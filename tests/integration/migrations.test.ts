import fs from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getFreePort, listMigrations, migrate, schemaPaths } from '@bfg/local';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { systemPostgresBinDir, startSystemPostgres } from '../support/system-postgres.ts';
import { makeTempDir } from '../support/temp-dir.ts';

const migrationVersions = async () => (await listMigrations(schemaPaths.migrationsDir)).map((m) => m.version);

describe('migrations on an empty database', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase({ empty: true });
  });
  afterAll(async () => {
    await db.drop();
  });

  it('applies bootstrap and every migration, records them like the Supabase CLI, and seeds once', async () => {
    const first = await migrate(db.sql, { seedOnFirstRun: true });
    expect(first.bootstrapped).toBe(true);
    expect(first.applied).toEqual(await migrationVersions());
    expect(first.seeded).toBe(true);

    const recorded = await db.sql<{ version: string; name: string }[]>`
      select version, name from supabase_migrations.schema_migrations order by version`;
    expect(recorded.map((r) => r.version)).toEqual(await migrationVersions());
    expect(recorded[0]!.name).toBe('sites_and_access');

    const [seed] = await db.sql<{ sites: number; patterns: number; active: boolean }[]>`
      select (select count(*)::int from site where slug = 'demo') as sites,
             (select count(*)::int from mqtt_topic) as patterns,
             (select is_active from mqtt_connection) as active`;
    expect(seed).toEqual({ sites: 1, patterns: 3, active: true });
  });

  it('applies nothing on a second run, and keeps the data', async () => {
    await db.sql`update site set name = 'Renamed' where slug = 'demo'`;
    const second = await migrate(db.sql, { seedOnFirstRun: true });
    expect(second.applied).toEqual([]);
    expect(second.seeded).toBe(false);
    const [site] = await db.sql<{ name: string }[]>`select name from site where slug = 'demo'`;
    expect(site!.name).toBe('Renamed');
  });

  it('has row level security on every table of the public schema, partitions included', async () => {
    const tables = await db.sql<{ name: string; rls: boolean }[]>`
      select c.relname as name, c.relrowsecurity as rls
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'public' and c.relkind in ('r', 'p')
      order by 1`;
    expect(tables.length).toBeGreaterThanOrEqual(14);
    expect(tables.filter((t) => !t.rls).map((t) => t.name)).toEqual([]);
  });

  it('keeps sensor_reading out of every publication and the followed tables in supabase_realtime', async () => {
    const rows = await db.sql<{ pubname: string; tablename: string }[]>`
      select pubname, tablename from pg_publication_tables where schemaname = 'public' order by 1, 2`;
    expect(rows.filter((r) => r.tablename.startsWith('sensor_reading'))).toEqual([]);
    expect(rows.filter((r) => r.pubname === 'supabase_realtime').map((r) => r.tablename)).toEqual([
      'discovered_topic', 'mqtt_connection', 'mqtt_connection_log', 'mqtt_parsing_log', 'mqtt_topic', 'site',
    ]);
  });

  it('rolls back a failing migration whole and names its file', async () => {
    const dir = await makeTempDir('bad-migration');
    try {
      await fs.mkdir(`${dir.path}/migrations`);
      await fs.writeFile(`${dir.path}/migrations/99990101000000_broken.sql`, 'create table half_done (id int);\nselect nonsense(;');
      const paths = { ...schemaPaths, migrationsDir: `${dir.path}/migrations` };
      await expect(migrate(db.sql, { paths, bootstrap: false })).rejects.toThrow(/99990101000000_broken\.sql failed/);
      const [row] = await db.sql<{ exists: boolean }[]>`select to_regclass('public.half_done') is not null as exists`;
      expect(row!.exists).toBe(false);
    } finally {
      await dir.remove();
    }
  });
});

// The schema must apply unchanged on Postgres 15 (Supabase's major version) as well as on the
// embedded 18; Debian's postgresql-15 provides the binaries (installed by .ci/run).
const pg15 = systemPostgresBinDir(15);
if (!pg15) console.warn('Skipping the Postgres 15 case: no server binaries under /usr/lib/postgresql/15/bin.');

describe.skipIf(!pg15)('migrations on Postgres 15', () => {
  it('applies bootstrap and every migration, then nothing on a second run', async () => {
    const dir = await makeTempDir('pg15');
    const server = await startSystemPostgres({
      binDir: pg15!,
      baseDir: dir.path,
      port: await getFreePort(),
      password: randomBytes(12).toString('hex'),
    });
    const sql = postgres(server.url('postgres'), { max: 1, onnotice: () => undefined });
    try {
      const [version] = await sql<{ major: string }[]>`select current_setting('server_version_num')::int / 10000 as major`;
      expect(String(version!.major)).toBe('15');
      const first = await migrate(sql, { seedOnFirstRun: true });
      expect(first.applied).toEqual(await migrationVersions());
      expect(first.seeded).toBe(true);
      expect((await migrate(sql)).applied).toEqual([]);
    } finally {
      await sql.end();
      await server.stop();
      await dir.remove();
    }
  });
});
