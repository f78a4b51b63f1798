import path from 'node:path';
import postgres from 'postgres';
import type { LocalConfig } from './config.ts';
import { startEmbeddedPostgres } from './embedded-postgres.ts';
import { migrate, type MigrateResult } from './migrate.ts';
import { loadOrCreateSecrets } from './secrets.ts';

export interface LocalDatabase {
  /** Connection URL of the application database. */
  readonly url: string;
  /** True when this process started the server (false with DATABASE_URL). */
  readonly embedded: boolean;
  readonly migration: MigrateResult;
  stop(): Promise<void>;
}

export interface OpenLocalDatabaseOptions {
  /** Apply supabase/seed.sql when this run created the schema. Default true (the demo data). */
  seed?: boolean;
}

/**
 * The database of the local stack, migrated to the current schema: `DATABASE_URL` when set,
 * otherwise embedded Postgres under `<BFG_DATA_DIR>/postgres` (created, bootstrapped, migrated and
 * seeded on first start; later starts apply only new migrations and keep the data).
 */
export async function openLocalDatabase(
  config: LocalConfig,
  log: (message: string) => void,
  options: OpenLocalDatabaseOptions = {},
): Promise<LocalDatabase> {
  const seed = options.seed ?? true;
  if (config.DATABASE_URL) {
    const migration = await migrateUrl(config.DATABASE_URL, log, seed);
    return { url: config.DATABASE_URL, embedded: false, migration, stop: () => Promise.resolve() };
  }

  const secrets = await loadOrCreateSecrets(config.BFG_DATA_DIR);
  const server = await startEmbeddedPostgres({
    dataDir: path.join(config.BFG_DATA_DIR, 'postgres'),
    port: config.BFG_DB_PORT,
    host: config.BFG_LISTEN_HOST,
    password: secrets.postgresPassword,
  });
  try {
    await createDatabaseIfMissing(server.adminUrl, config.BFG_DB_NAME);
    const url = server.urlFor(config.BFG_DB_NAME);
    const migration = await migrateUrl(url, log, seed);
    return { url, embedded: true, migration, stop: () => server.stop() };
  } catch (err) {
    await server.stop();
    throw err;
  }
}

async function migrateUrl(url: string, log: (message: string) => void, seed: boolean): Promise<MigrateResult> {
  const sql = postgres(url, { max: 1, onnotice: () => undefined });
  try {
    return await migrate(sql, { seedOnFirstRun: seed, log });
  } finally {
    await sql.end({ timeout: 5 });
  }
}

export async function createDatabaseIfMissing(adminUrl: string, name: string): Promise<boolean> {
  const sql = postgres(adminUrl, { max: 1, onnotice: () => undefined });
  try {
    const [row] = await sql<
      { exists: boolean }[]
    >`select exists (select 1 from pg_database where datname = ${name}) as exists`;
    if (row?.exists) return false;
    await sql`create database ${sql(name)}`;
    return true;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** The URL `openLocalDatabase` serves the embedded database at (for psql and other tools). */
export async function embeddedDatabaseUrl(config: LocalConfig): Promise<string> {
  const secrets = await loadOrCreateSecrets(config.BFG_DATA_DIR);
  return `postgres://postgres:${encodeURIComponent(secrets.postgresPassword)}@${config.BFG_LISTEN_HOST}:${config.BFG_DB_PORT}/${config.BFG_DB_NAME}`;
}
