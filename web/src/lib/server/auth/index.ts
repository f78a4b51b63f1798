import { BFG_JWT_SECRET, BFG_SUPABASE_SERVER_URL } from '$app/env/private';
import { PUBLIC_SUPABASE_ANON_KEY, PUBLIC_SUPABASE_URL } from '$app/env/public';
import type { AuthProvider } from './session.ts';
import { createSupabaseAuth } from './supabase-auth.ts';

/**
 * One auth path: Supabase Auth at PUBLIC_SUPABASE_URL — the project's, or the local stack's
 * stand-in (supabase/local serves /auth/v1 beside /realtime/v1 at one base URL) — reached at
 * BFG_SUPABASE_SERVER_URL when the server must take another way to it than the browser (compose).
 */
function createAuth(): AuthProvider {
  return createSupabaseAuth(BFG_SUPABASE_SERVER_URL ?? PUBLIC_SUPABASE_URL, PUBLIC_SUPABASE_ANON_KEY, BFG_JWT_SECRET);
}

let provider: AuthProvider | null = null;

/** The process's auth provider (made on first use, not while building). */
export function auth(): AuthProvider {
  provider ??= createAuth();
  return provider;
}
export * from './session.ts';
export { userOf, type Claims, type SessionUser } from './claims.ts';
