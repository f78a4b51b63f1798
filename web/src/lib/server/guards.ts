import { error } from '@sveltejs/kit';
import type { Session } from './auth/session.ts';

/** The signed-in session (hooks redirect before a page load runs without one). */
export function requireSession(locals: App.Locals): Session {
  if (!locals.session) error(401, 'Sign in first.');
  return locals.session;
}

/**
 * Admin-only actions are refused here, on the server, whatever the page showed; RLS refuses the
 * write as well, so a forged request fails twice.
 */
export function requireAdmin(locals: App.Locals): Session {
  const session = requireSession(locals);
  if (!session.user.isAdmin) error(403, 'Only admins can do this.');
  return session;
}

/** Parses a numeric id from a form or query value; 400 when it is not one. */
export function parseId(value: FormDataEntryValue | string | null | undefined, what: string): number {
  if (typeof value !== 'string' || !/^[1-9][0-9]{0,17}$/.test(value)) error(400, `Missing or invalid ${what}.`);
  return Number(value);
}
