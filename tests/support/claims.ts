import { randomUUID } from 'node:crypto';
import type { Sql, TransactionSql } from 'postgres';

export type ApiRole = 'anon' | 'authenticated' | 'service_role';

/** The JWT claims Supabase Auth puts in a user's access token (the parts RLS reads). */
export interface Claims {
  sub?: string;
  role: ApiRole;
  email?: string;
  app_metadata?: Record<string, unknown>;
  exp?: number;
}

export function userClaims(userId: string, options: { admin?: boolean } = {}): Claims {
  return {
    sub: userId,
    role: 'authenticated',
    email: `${userId}@example.test`,
    app_metadata: options.admin ? { provider: 'email', role: 'admin' } : { provider: 'email' },
    exp: Math.floor(Date.now() / 1000) + 3600,
  };
}

export const anonClaims: Claims = { role: 'anon' };
export const serviceClaims: Claims = { role: 'service_role' };

/**
 * Runs `fn` the way PostgREST runs a request: in a transaction, as the claim's role, with
 * `request.jwt.claims` set. Rolled back afterwards unless `commit` is set, so probes leave no trace.
 */
export async function asClaims<T>(
  sql: Sql,
  claims: Claims,
  fn: (tx: TransactionSql) => Promise<T>,
  options: { commit?: boolean } = {},
): Promise<T> {
  const rollback = Symbol('rollback');
  let result: T | undefined;
  try {
    await sql.begin(async (tx) => {
      await tx`select set_config('role', ${claims.role}, true), set_config('request.jwt.claims', ${JSON.stringify(claims)}, true)`;
      result = await fn(tx);
      if (!options.commit) throw rollback;
    });
  } catch (err) {
    if (err !== rollback) throw err;
  }
  return result as T;
}

/** Inserts an auth.users row (as Supabase Auth would on sign-up) and returns its id. */
export async function newUser(sql: Sql): Promise<string> {
  const id = randomUUID();
  await sql`insert into auth.users (id, email) values (${id}, ${`${id}@example.test`})`;
  return id;
}
