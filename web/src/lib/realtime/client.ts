import { createClient, type SupabaseClient } from '@supabase/supabase-js';
import { z } from 'zod';
import { PUBLIC_SUPABASE_ANON_KEY, PUBLIC_SUPABASE_URL } from '$app/env/public';

const tokenResponse = z.object({ accessToken: z.string(), expiresAt: z.number() });

/** Ask for a new token this long before the current one expires (the server refreshes at 5 min). */
const RENEW_BEFORE_S = 120;

let current: z.infer<typeof tokenResponse> | null = null;
let client: SupabaseClient | null = null;

/** The token the server rendered the page with; saves a round trip on the first join. */
export function primeAccessToken(accessToken: string, expiresAt: number): void {
  if (!current || expiresAt > current.expiresAt) current = { accessToken, expiresAt };
}

async function accessToken(): Promise<string | null> {
  const now = Date.now() / 1000;
  if (current && current.expiresAt - now > RENEW_BEFORE_S) return current.accessToken;
  // The session cookie is httpOnly; the server refreshes it and hands out the access token.
  const response = await fetch('/auth/token', { headers: { accept: 'application/json' }, cache: 'no-store' });
  if (!response.ok) return null;
  current = tokenResponse.parse(await response.json());
  return current.accessToken;
}

/**
 * The browser's one supabase-js client, used only for Realtime. The `accessToken` callback (not
 * setAuth) is what supabase-js asks on every join and rejoin, so channels always carry the user's
 * current JWT — also after a reconnect, where a token set once would fall back to the anon key.
 */
export function supabase(): SupabaseClient {
  client ??= createClient(PUBLIC_SUPABASE_URL, PUBLIC_SUPABASE_ANON_KEY, {
    accessToken,
    realtime: { heartbeatIntervalMs: 15_000 },
  });
  return client;
}
