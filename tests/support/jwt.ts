import { SignJWT } from 'jose';

/** Signs a Supabase-style JWT (HS256) with the given claims; `expiresIn` in seconds (negative = expired). */
export function signJwt(secret: string, claims: Record<string, unknown>, expiresIn = 3600): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuedAt(now - 10)
    .setExpirationTime(now + expiresIn)
    .sign(new TextEncoder().encode(secret));
}
