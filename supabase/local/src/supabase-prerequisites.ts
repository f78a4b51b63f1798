import type { TransactionSql } from 'postgres';
import { LocalStackError, coerceError } from './errors.ts';

/** A connection, a reserved one or a transaction: all these functions need is `unsafe`. */
type Queryable = Pick<TransactionSql, 'unsafe'>;

/** Supabase projects have the `supabase_admin` role; plain Postgres does not. */
export async function isSupabaseDatabase(sql: Queryable): Promise<boolean> {
  const [row] = await sql.unsafe<{ supabase: boolean }[]>(
    `select exists (select 1 from pg_roles where rolname = 'supabase_admin') as supabase`,
  );
  return row?.supabase ?? false;
}

/**
 * What `supabase/migrations` use that a fresh self-hosted Supabase database does not have until
 * Supabase's own services have started once: Realtime creates `realtime.messages`,
 * `realtime.send` and `realtime.topic` (its tenant migrations, run in the background after it
 * starts), Auth its `auth.users` columns. Plain Postgres gets all of them from `sql/bootstrap`.
 */
const PREREQUISITES = [
  { name: 'auth.users', present: `to_regclass('auth.users') is not null` },
  { name: 'realtime.messages', present: `to_regclass('realtime.messages') is not null` },
  { name: 'realtime.send', present: `to_regprocedure('realtime.send(jsonb,text,text,boolean)') is not null` },
  { name: 'realtime.topic', present: `to_regprocedure('realtime.topic()') is not null` },
  {
    name: 'publication supabase_realtime',
    present: `exists (select 1 from pg_publication where pubname = 'supabase_realtime')`,
  },
] as const;

/** The prerequisites the database lacks now (none: ready to migrate). */
export async function missingSupabasePrerequisites(sql: Queryable): Promise<string[]> {
  const columns = PREREQUISITES.map((p, i) => `${p.present} as p${i}`).join(', ');
  const [row] = await sql.unsafe<Record<string, boolean>[]>(`select ${columns}`);
  return PREREQUISITES.filter((_, i) => !row?.[`p${i}`]).map((p) => p.name);
}

/**
 * Waits until every prerequisite exists (checked every `intervalMs`), so that a migration run
 * started together with Supabase's services (docker-compose.yml's `migrate`) does not fail on an
 * object Realtime has not created yet. A database not reachable yet counts as not ready. Fails
 * after `timeoutMs` naming what is still missing.
 */
export async function waitForSupabasePrerequisites(
  sql: Queryable,
  options: { timeoutMs: number; intervalMs?: number; log?: (message: string) => void },
): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  let said = '';
  for (;;) {
    const missing = await missingSupabasePrerequisites(sql).catch((err: unknown) => [
      `a connection (${coerceError(err).message})`,
    ]);
    if (missing.length === 0) return;
    if (Date.now() >= deadline) {
      throw new LocalStackError(
        `The database still lacks ${missing.join(', ')} after ${Math.round(options.timeoutMs / 1000)} s: start Supabase Auth and Realtime against it (they create these on their first start), then migrate again.`,
      );
    }
    const now = missing.join(', ');
    if (now !== said) options.log?.(`waiting for Supabase Auth and Realtime to create ${now}`);
    said = now;
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 1000));
  }
}
