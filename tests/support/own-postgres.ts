import { randomBytes } from 'node:crypto';
import path from 'node:path';
import postgres from 'postgres';
import { getFreePort, migrate, startEmbeddedPostgres, type RunningPostgres } from '@bfg/local';
import { makeTempDir } from './temp-dir.ts';

export interface OwnPostgres {
  /** Superuser URL of its `postgres` database (migrated). */
  url: string;
  sql: postgres.Sql;
  /** Stops the server (an outage); `start()` brings it back on the same port with the same data. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stops it for good and removes its directory. */
  remove(): Promise<void>;
}

/**
 * A migrated Postgres cluster of a test's own, which the test may stop and start again (the
 * shared test cluster must stay up for the other files).
 */
export async function startOwnPostgres(): Promise<OwnPostgres> {
  const dir = await makeTempDir('pg-outage');
  let server: RunningPostgres | undefined;
  let sql: postgres.Sql | undefined;
  const remove = async () => {
    await sql?.end().catch(() => undefined);
    await server?.stop().catch(() => undefined);
    server = undefined;
    await dir.remove();
  };
  try {
    const port = await getFreePort();
    const password = randomBytes(12).toString('hex');
    const start = () =>
      startEmbeddedPostgres({ dataDir: path.join(dir.path, 'data'), port, password, ephemeral: true });
    server = await start();
    const url = server.urlFor('postgres');
    sql = postgres(url, { max: 2, onnotice: () => undefined });
    await migrate(sql);
    return {
      url,
      sql,
      async stop() {
        await server?.stop();
        server = undefined;
      },
      async start() {
        server = await start();
      },
      remove,
    };
  } catch (err) {
    await remove();
    throw err;
  }
}
