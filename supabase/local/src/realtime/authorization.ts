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
