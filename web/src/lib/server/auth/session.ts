import type { Cookies } from '@sveltejs/kit';
import type { Claims, SessionUser } from './claims.ts';

/** A signed-in user: their access token (sent to Postgres as claims and to Realtime) and who they are. */
export interface Session {
  accessToken: string;
  /** Epoch seconds. */
  expiresAt: number;
  claims: Claims;
  user: SessionUser;
}

/** Sign-in result: a session, or a reason to show next to the form. */
export type SignInResult = { ok: true; session: Session; cookies: SessionCookies } | { ok: false; message: string };

/** What the browser keeps (httpOnly cookies). */
export interface SessionCookies {
  access: string;
  /** Supabase Auth's refresh token; local sessions refresh from the access token itself. */
  refresh?: string;
}

/** Local accounts or Supabase Auth: the two ways to sign in, behind one interface. */
export interface AuthProvider {
  signIn(email: string, password: string): Promise<SignInResult>;
  /**
   * The session the cookies hold, refreshed when the access token is expired or about to be
   * (then `cookies` is the new set to store); null when there is none or it is no longer valid.
   */
  resume(cookies: SessionCookies): Promise<{ session: Session; cookies?: SessionCookies } | null>;
  signOut(cookies: SessionCookies): Promise<void>;
}

const ACCESS_COOKIE = 'bfg-access-token';
const REFRESH_COOKIE = 'bfg-refresh-token';
/** How long a browser stays signed in without using the dashboard. */
export const SESSION_MAX_AGE_S = 7 * 86_400;
/** Refresh tokens this close to expiry, so Realtime never gets an expired one. */
export const REFRESH_MARGIN_S = 5 * 60;

export function readSessionCookies(cookies: Cookies): SessionCookies | null {
  const access = cookies.get(ACCESS_COOKIE);
  if (!access) return null;
  const refresh = cookies.get(REFRESH_COOKIE);
  return refresh ? { access, refresh } : { access };
}

export function writeSessionCookies(cookies: Cookies, value: SessionCookies, secure: boolean): void {
  const options = { path: '/', httpOnly: true, sameSite: 'lax', secure, maxAge: SESSION_MAX_AGE_S } as const;
  cookies.set(ACCESS_COOKIE, value.access, options);
  if (value.refresh) cookies.set(REFRESH_COOKIE, value.refresh, options);
}

/** `secure` as when they were set: a browser ignores a Secure deletion sent over plain http. */
export function clearSessionCookies(cookies: Cookies, secure: boolean): void {
  cookies.delete(ACCESS_COOKIE, { path: '/', secure });
  cookies.delete(REFRESH_COOKIE, { path: '/', secure });
}
