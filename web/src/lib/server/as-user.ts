import type { TransactionSql } from 'postgres';
import { sql } from './db.ts';
import type { Claims } from './auth/claims.ts';

/**
 * Runs `work` in a transaction as the signed-in user, the way PostgREST and Supabase Realtime do:
 * `role` and `request.jwt.claims` are set for this transaction only, so auth.uid()/auth.jwt() and
 * every RLS policy see exactly what Studio or a SQL integration with the same JWT would.
 */
export function asUser<T>(claims: Claims, work: (tx: TransactionSql) => Promise<T>): Promise<T> {
  return sql().begin(async (tx) => {
    await tx`select set_config('role', ${claims.role}, true), set_config('request.jwt.claims', ${JSON.stringify(claims)}, true)`;
    return work(tx);
  }) as Promise<T>;
}
