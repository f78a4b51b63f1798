import { randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';

export interface TokenUser {
  id: string;
  email: string;
  appMetadata: Record<string, unknown>;
}

/**
 * An access token with the claims Supabase Auth puts in its JWTs (role `authenticated`, aud,
 * sub, email, app_metadata, user_metadata, aal, amr, session_id), signed HS256 with the project's
 * JWT secret, so RLS (auth.jwt()/auth.uid()) and Realtime treat local users as Supabase users.
 */
export function mintAccessToken(user: TokenUser, jwtSecret: string, ttlSeconds = 3600): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({
    aud: 'authenticated',
    role: 'authenticated',
    email: user.email,
    phone: '',
    app_metadata: user.appMetadata,
    user_metadata: {},
    aal: 'aal1',
    amr: [{ method: 'password', timestamp: now }],
    session_id: randomUUID(),
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
