import type { Sql } from 'postgres';
import type { Claims } from './jwt.ts';

const ROLLBACK = Symbol('rollback');

/**
 * Realtime Authorization for a private channel, done as Supabase Realtime does it: write a probe
 * broadcast message for the topic with the server's own role, then — as the user's role, with their
 * JWT claims and `realtime.topic` set — check whether the RLS policies on realtime.messages let
 * them read it. Everything is rolled back.
 */
export async function canReadTopic(sql: Sql, claims: Claims, subTopic: string): Promise<boolean> {
  let allowed = false;
  try {
    await sql.begin(async (tx) => {
      const [probe] = await tx<{ id: string }[]>`
        insert into realtime.messages (topic, extension, event, payload, private)
        values (${subTopic}, 'broadcast', 'authorization_probe', '{}', true)
        returning id`;
      await tx`select set_config('role', ${claims.role}, true),
                      set_config('request.jwt.claims', ${JSON.stringify(claims)}, true),
                      set_config('realtime.topic', ${subTopic}, true)`;
      const rows = await tx`select 1 from realtime.messages where id = ${probe!.id} and extension = 'broadcast'`;
      allowed = rows.length === 1;
      throw ROLLBACK;
    });
  } catch (err) {
    if (err !== ROLLBACK) throw err;
  }
  return allowed;
}

const quoteIdent = (name: string) => `"${name.replaceAll('"', '""')}"`;

/**
 * Whether the subscriber may SELECT the changed row, checked as Supabase Realtime does: as their
 * role with their claims, by primary key against the table's current state.
 */
export async function canSeeRow(sql: Sql, claims: Claims, schema: string, table: string, keys: string[], record: Record<string, unknown>): Promise<boolean> {
  if (keys.length === 0) return false;
  let visible = false;
  try {
    await sql.begin(async (tx) => {
      await tx`select set_config('role', ${claims.role}, true), set_config('request.jwt.claims', ${JSON.stringify(claims)}, true)`;
      const where = keys.map((key, i) => `${quoteIdent(key)} = $${i + 1}`).join(' and ');
      // unsafe: identifiers come from the replication stream and are quoted; values are parameters.
      const rows = await tx.unsafe(`select exists (select 1 from ${quoteIdent(schema)}.${quoteIdent(table)} where ${where}) as visible`,
        keys.map((key) => String(record[key] as string | number)));
      visible = (rows[0] as { visible?: boolean } | undefined)?.visible === true;
      throw ROLLBACK;
    });
  } catch (err) {
    if (err !== ROLLBACK) {
      // A role that may not read the table at all (permission denied) does not see the row.
      if ((err as { code?: string }).code === '42501') return false;
      throw err;
    }
  }
  return visible;
}

/** Tables with row level security, by "schema.table" (cached; RLS is rarely switched at runtime). */
export async function hasRowLevelSecurity(sql: Sql, cache: Map<string, boolean>, schema: string, table: string): Promise<boolean> {
  const key = `${schema}.${table}`;
  const cached = cache.get(key);
  if (cached !== undefined) return cached;
  const [row] = await sql<{ rls: boolean }[]>`
    select c.relrowsecurity as rls from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = ${schema} and c.relname = ${table}`;
  const rls = row?.rls ?? true;
  cache.set(key, rls);
  return rls;
}
