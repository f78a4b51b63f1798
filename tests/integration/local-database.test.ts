import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalStackError, getFreePort, loadLocalConfig, openLocalDatabase } from '@bfg/local';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { makeTempDir } from '../support/temp-dir.ts';

/** `supabase/local`: the database behind `npm start`. */

const quiet = () => undefined;

describe('embedded Postgres of the local stack', () => {
  let dir: Awaited<ReturnType<typeof makeTempDir>>;
  beforeAll(async () => {
    dir = await makeTempDir('local');
  });
  afterAll(async () => {
    await dir.remove();
  });

  it('creates, migrates and seeds on first start; keeps the data and applies nothing on the next', async () => {
    const port = await getFreePort();
    const config = loadLocalConfig({ BFG_DATA_DIR: path.join(dir.path, 'data'), BFG_DB_PORT: String(port) });

    const first = await openLocalDatabase(config, quiet);
    try {
      expect(first.embedded).toBe(true);
      expect(first.migration.applied.length).toBeGreaterThan(0);
      expect(first.migration.seeded).toBe(true);
      const sql = postgres(first.url, { max: 1 });
      const [settings] = await sql<{ walLevel: string; listen: string }[]>`
        select current_setting('wal_level') as "walLevel", current_setting('listen_addresses') as listen`;
      expect(settings).toEqual({ walLevel: 'logical', listen: '127.0.0.1' });
      await sql`insert into site (slug, name) values ('kept', 'Kept across restarts')`;
      await sql.end();
    } finally {
      await first.stop();
    }

    const second = await openLocalDatabase(config, quiet);
    try {
      expect(second.migration).toEqual({ bootstrapped: true, applied: [], seeded: false });
      const sql = postgres(second.url, { max: 1 });
      const sites = await sql<{ slug: string }[]>`select slug from site order by slug`;
      expect(sites.map((s) => s.slug)).toEqual(['demo', 'kept']);
      await sql.end();
    } finally {
      await second.stop();
    }
  });

  it('says clearly when the port is taken', async () => {
    const blocker = net.createServer();
    const port = await getFreePort();
    await new Promise<void>((resolve) => blocker.listen(port, '127.0.0.1', resolve));
    try {
      const config = loadLocalConfig({ BFG_DATA_DIR: path.join(dir.path, 'busy'), BFG_DB_PORT: String(port) });
      const error = await openLocalDatabase(config, quiet).catch((err: unknown) => err);
      expect(error).toBeInstanceOf(LocalStackError);
      expect((error as Error).message).toMatch(new RegExp(`Port ${port} on 127\\.0\\.0\\.1 is already in use`));
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });

  it('says clearly when the data directory is unusable', async () => {
    const notACluster = path.join(dir.path, 'not-a-cluster');
    await fs.mkdir(path.join(notACluster, 'postgres'), { recursive: true });
    await fs.writeFile(path.join(notACluster, 'postgres', 'notes.txt'), 'something else');
    const config = loadLocalConfig({ BFG_DATA_DIR: notACluster, BFG_DB_PORT: String(await getFreePort()) });
    const error = await openLocalDatabase(config, quiet).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(LocalStackError);
    expect((error as Error).message).toMatch(/is not empty but holds no Postgres cluster/);

    const aFile = path.join(dir.path, 'a-file');
    await fs.writeFile(aFile, '');
    const fileConfig = loadLocalConfig({ BFG_DATA_DIR: aFile, BFG_DB_PORT: String(await getFreePort()) });
    const fileError = await openLocalDatabase(fileConfig, quiet).catch((err: unknown) => err);
    expect(fileError).toBeInstanceOf(LocalStackError);
    expect((fileError as Error).message).toMatch(/a-file/);
  });
});

describe('configuration', () => {
  it('lists every bad variable in one message', () => {
    expect(() => loadLocalConfig({ BFG_DB_PORT: '99999', DATABASE_URL: 'not a url', BFG_DB_NAME: 'Bad-Name' })).toThrow(
      /Invalid environment variables:\n {2}DATABASE_URL: .*\n {2}BFG_DB_PORT: .*\n {2}BFG_DB_NAME: /,
    );
  });
});

describe('with DATABASE_URL', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase({ empty: true });
  });
  afterAll(async () => {
    await db.drop();
  });

  it('migrates that database and starts no server', async () => {
    const local = await openLocalDatabase(
      loadLocalConfig({ DATABASE_URL: db.url, BFG_DATA_DIR: '/nonexistent/never-used' }),
      quiet,
    );
    expect(local.embedded).toBe(false);
    expect(local.url).toBe(db.url);
    expect(local.migration.seeded).toBe(true);
    await local.stop();
    const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from site where slug = 'demo'`;
    expect(row!.n).toBe(1);
  });
});
