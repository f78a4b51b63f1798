import { errors, jwtVerify } from 'jose';
import { claimsSchema, type Claims } from './claims.ts';

export type VerifiedToken = { claims: Claims; expired: false } | { claims: Claims; expired: true } | null;

/**
 * Checks an HS256 access token against the project's JWT secret. An expired but otherwise valid
 * token is reported as such (its claims say who may be refreshed); anything else is null.
 */
export async function verifyAccessToken(token: string, jwtSecret: string): Promise<VerifiedToken> {
  const key = new TextEncoder().encode(jwtSecret);
  try {
    const { payload } = await jwtVerify(token, key, { algorithms: ['HS256'] });
    const claims = claimsSchema.safeParse(payload);
    return claims.success ? { claims: claims.data, expired: false } : null;
  } catch (err) {
    if (!(err instanceof errors.JWTExpired)) return null;
    // The signature was checked before the expiry; JWTExpired carries the verified payload.
    const claims = claimsSchema.safeParse(err.payload);
    return claims.success ? { claims: claims.data, expired: true } : null;
  }
}
