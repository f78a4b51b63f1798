import { BFG_AUTH, BFG_JWT_SECRET } from '$app/env/private';
import { PUBLIC_SUPABASE_ANON_KEY, PUBLIC_SUPABASE_URL } from '$app/env/public';
import { sql } from '../db.ts';
import { createLocalAuth } from './local-auth.ts';
import type { AuthProvider } from './session.ts';
import { createSupabaseAuth } from './supabase-auth.ts';

function createAuth(): AuthProvider {
  if (BFG_AUTH === 'supabase') return createSupabaseAuth(PUBLIC_SUPABASE_URL, PUBLIC_SUPABASE_ANON_KEY, BFG_JWT_SECRET);
  if (!BFG_JWT_SECRET) throw new Error('BFG_AUTH=local needs BFG_JWT_SECRET: the secret the realtime server and Postgres claims trust.');
  return createLocalAuth(sql(), BFG_JWT_SECRET);
}

let provider: AuthProvider | null = null;

/** The process's auth provider, chosen by BFG_AUTH (made on first use, not while building). */
export function auth(): AuthProvider {
  provider ??= createAuth();
  return provider;
}
export * from './session.ts';
export { userOf, type Claims, type SessionUser } from './claims.ts';
