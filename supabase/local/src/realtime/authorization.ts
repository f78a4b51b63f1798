import type { Sql, TransactionSql } from 'postgres';
import type { Claims } from './jwt.ts';

const ROLLBACK = Symbol('rollback');

/** Runs `fn` as the claims' role with their JWT claims and `realtime.topic` set; always rolled back. */
async function asTopicUser<T>(sql: Sql, claims: Claims, subTopic: string, fn: (tx: TransactionSql) => Promise<T>): Promise<T> {
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
    if (err !== ROLLBACK) throw err;
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
    if ((err as { code?: string }).code === '42501') return false;
    throw err;
  }
}
