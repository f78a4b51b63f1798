import { requireSession } from '#lib/server/guards.ts';
import type { LayoutServerLoad } from './$types';

export const load = (({ locals }) => {
  const session = requireSession(locals);
  return {
    user: session.user,
    // supabase-js Realtime needs the user's JWT in the browser, as with Supabase Auth.
    realtime: { accessToken: session.accessToken, expiresAt: session.expiresAt },
  };
}) satisfies LayoutServerLoad;
