import type { Sql, TransactionSql } from 'postgres';
import type { Claims } from './jwt.ts';

const ROLLBACK = Symbol('rollback');

/**
 * As Realtime's RlsPolicyError: an error the policies raise (a role that does not exist, a
 * failing policy function) means "not allowed"; only losing the database is an error.
 */
export function isPolicyError(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && !/^(08|57|53)/.test(code);
}

/** Runs `fn` as the claims' role with their JWT claims and `realtime.topic` set; always rolled back. */
async function asTopicUser<T>(
  sql: Sql,
  claims: Claims,
  subTopic: string,
  fn: (tx: TransactionSql) => Promise<T>,
): Promise<T> {
  let result: T | undefined;
  try {
    await sql.begin(async (tx) => {
      await tx`select set_config('role', ${claims.role}, true),
                      set_config('request.jwt.claims', ${JSON.stringify(claims)}, true),
                      set_config('realtime.topic', ${subTopic}, true)`;
      result = await fn(tx);
      throw ROLLBACK;
    });
  } catch (err) {
    if (err !== ROLLBACK) throw err;
  }
  return result as T;
}

/**
 * Realtime Authorization's read check for a private channel, done as Supabase Realtime does it:
 * write a probe broadcast message for the topic with the server's own role, then — as the user's
 * role, with their JWT claims and `realtime.topic` set — check whether the SELECT policies on
 * realtime.messages let them read it. Everything is rolled back.
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
    if (err === ROLLBACK) return allowed;
    if (isPolicyError(err)) return false;
    throw err;
  }
  return allowed;
}

/**
 * The write check: may the user send on the private channel? As Realtime: insert a broadcast
 * message for the topic as the user's role and claims; the INSERT policies on realtime.messages
 * decide (a refusal is SQLSTATE 42501). Rolled back.
 */
export async function canWriteTopic(sql: Sql, claims: Claims, subTopic: string): Promise<boolean> {
  try {
    return await asTopicUser(sql, claims, subTopic, async (tx) => {
      await tx`insert into realtime.messages (topic, extension) values (${subTopic}, 'broadcast')`;
      return true;
    });
  } catch (err) {
    if (isPolicyError(err)) return false;
    throw err;
  }
}
