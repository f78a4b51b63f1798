import { json } from '@sveltejs/kit';
import { requireSession } from '#lib/server/guards.ts';
import type { RequestHandler } from './$types';

/**
 * The current access token for supabase-js Realtime in the browser (the session cookie is
 * httpOnly). The `handle` hook has already refreshed it if it was close to expiry.
 */
export const GET: RequestHandler = ({ locals, setHeaders }) => {
  const session = requireSession(locals);
  setHeaders({ 'cache-control': 'no-store' });
  return json({ accessToken: session.accessToken, expiresAt: session.expiresAt });
};
