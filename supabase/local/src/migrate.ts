import fs from 'node:fs/promises';
import path from 'node:path';
import type { Sql, TransactionSql } from 'postgres';
import { coerceError } from './errors.ts';
import { schemaPaths, type SchemaPaths } from './paths.ts';
import { isSupabaseDatabase } from './supabase-prerequisites.ts';

export interface MigrateOptions {
  paths?: SchemaPaths;
  /**
   * Apply `sql/bootstrap` first. Default: only when the database is not a Supabase project (which
   * ships those objects itself).
   */
  bootstrap?: boolean;
  /** Run seed.sql when this run created the schema (no migration had been applied before). */
  seedOnFirstRun?: boolean;
  /** Progress messages. */
  log?: (message: string) => void;
}

export interface MigrateResult {
  bootstrapped: boolean;
  /** Versions applied by this run, in order. */
  applied: string[];
  seeded: boolean;
}

interface MigrationFile {
  version: string;
  name: string;
  file: string;
}

/** Same key whoever migrates (the CLI, the ingestor, tests), so only one runs at a time. */
const MIGRATION_LOCK = 'bfg:migrate';

/**
 * Brings a database to the current schema: bootstrap (plain Postgres only), then every migration
 * in `supabase/migrations` not yet recorded in `supabase_migrations.schema_migrations` (the table
 * the Supabase CLI uses, so `supabase db push` and this runner agree on what was applied), then
 * the seed on first run. Each migration runs in its own transaction with its record.
 */
export async function migrate(sql: Sql, options: MigrateOptions = {}): Promise<MigrateResult> {
  const paths = options.paths ?? schemaPaths;
  const log = options.log ?? (() => undefined);
  const result: MigrateResult = { bootstrapped: false, applied: [], seeded: false };

  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtext(${MIGRATION_LOCK}))`;

    const bootstrap = options.bootstrap ?? !(await isSupabaseDatabase(tx));
    if (bootstrap) {
      for (const file of await listSqlFiles(paths.bootstrapDir)) {
        await runFile(tx, path.join(paths.bootstrapDir, file), `bootstrap ${file}`);
      }
      result.bootstrapped = true;
    }

    await tx`create schema if not exists supabase_migrations`;
    await tx`
      create table if not exists supabase_migrations.schema_migrations (
        version text primary key,
        statements text[],
        name text
      )`;
    const rows = await tx<{ version: string }[]>`select version from supabase_migrations.schema_migrations`;
    const done = new Set(rows.map((row) => row.version));
    const firstRun = done.size === 0;

    for (const migration of await listMigrations(paths.migrationsDir)) {
      if (done.has(migration.version)) continue;
      const text = await fs.readFile(migration.file, 'utf8');
      // A savepoint per migration, so a failure names the file and nothing of it stays applied.
      await tx.savepoint(async (sp) => {
        await runText(sp, text, `migration ${path.basename(migration.file)}`);
        await sp`
          insert into supabase_migrations.schema_migrations (version, statements, name)
          values (${migration.version}, ${[text]}, ${migration.name})`;
      });
      result.applied.push(migration.version);
      log(`applied migration ${path.basename(migration.file)}`);
    }

    if (firstRun && options.seedOnFirstRun) {
      await runFile(tx, paths.seedFile, 'seed.sql');
      result.seeded = true;
      log('applied seed.sql');
    }
  });
  return result;
}

async function listSqlFiles(dir: string): Promise<string[]> {
  return (await fs.readdir(dir)).filter((file) => file.endsWith('.sql')).sort();
}

/** `<version>_<name>.sql`, as `supabase migration new` names them; sorted by version. */
export async function listMigrations(dir: string): Promise<MigrationFile[]> {
  const migrations: MigrationFile[] = [];
  for (const file of await listSqlFiles(dir)) {
    const match = /^(\d+)_(.+)\.sql$/.exec(file);
    if (!match) throw new Error(`${path.join(dir, file)}: a migration file must be named <version>_<name>.sql`);
    migrations.push({ version: match[1]!, name: match[2]!, file: path.join(dir, file) });
  }
  return migrations;
}

async function runFile(sql: TransactionSql, file: string, label: string): Promise<void> {
  await runText(sql, await fs.readFile(file, 'utf8'), label);
}

async function runText(sql: TransactionSql, text: string, label: string): Promise<void> {
  try {
    // unsafe: trusted SQL files from the repository, several statements each (simple protocol).
    await sql.unsafe(text);
  } catch (err) {
    throw new Error(`${label} failed: ${coerceError(err).message}`, { cause: err });
  }
}
