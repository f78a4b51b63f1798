import { randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';

export interface TokenUser {
  id: string;
  email: string;
  appMetadata: Record<string, unknown>;
  userMetadata?: Record<string, unknown>;
}

/** The auth.sessions row a token belongs to (without one, a random session_id no server knows). */
export interface TokenSession {
  id: string;
  /** When the user signed in: the timestamp of the `amr` password entry. */
  signedInAt: Date;
}

/**
 * An access token with the claims Supabase Auth puts in its JWTs (role `authenticated`, aud,
 * sub, email, app_metadata, user_metadata, aal, amr, session_id), signed HS256 with the project's
 * JWT secret, so RLS (auth.jwt()/auth.uid()) and Realtime treat local users as Supabase users.
 */
export function mintAccessToken(
  user: TokenUser,
  jwtSecret: string,
  ttlSeconds = 3600,
  session?: TokenSession,
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const signedInAt = session ? Math.floor(session.signedInAt.getTime() / 1000) : now;
  return new SignJWT({
    aud: 'authenticated',
    role: 'authenticated',
    email: user.email,
    phone: '',
    app_metadata: user.appMetadata,
    user_metadata: user.userMetadata ?? {},
    aal: 'aal1',
    amr: [{ method: 'password', timestamp: signedInAt }],
    session_id: session?.id ?? randomUUID(),
    is_anonymous: false,
  })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(user.id)
    .setIssuer('bfg-local')
    .setIssuedAt(now)
    .setExpirationTime(now + ttlSeconds)
    .sign(new TextEncoder().encode(jwtSecret));
}

/** The anon key of the local project: a long-lived JWT with role `anon`, as Supabase issues it. */
export function mintAnonKey(jwtSecret: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ role: 'anon' })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer('bfg-local')
    .setIssuedAt(now)
    .setExpirationTime(now + 10 * 365 * 86_400)
    .sign(new TextEncoder().encode(jwtSecret));
}

/**
 * The service_role key of the local project: a long-lived JWT with role `service_role`, as
 * Supabase issues it. It passes the Auth admin API and bypasses RLS; never give it to a browser.
 */
export function mintServiceRoleKey(jwtSecret: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ role: 'service_role' })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer('bfg-local')
    .setIssuedAt(now)
    .setExpirationTime(now + 10 * 365 * 86_400)
    .sign(new TextEncoder().encode(jwtSecret));
}
