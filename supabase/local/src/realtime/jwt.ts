import { errors, jwtVerify, type JWTPayload } from 'jose';

export interface Claims extends JWTPayload {
  role: string;
  exp: number;
  sub?: string;
  app_metadata?: Record<string, unknown>;
}

export type VerifyResult = { ok: true; claims: Claims } | { ok: false; message: string };

/**
 * Verifies a Supabase JWT (HS256 with the project's secret) the way Realtime does, with its error
 * texts: the token must be valid, unexpired, and carry `role` and `exp`.
 */
export async function verifyJwt(token: string | undefined, secret: Uint8Array): Promise<VerifyResult> {
  if (!token) return { ok: false, message: 'API key is missing' };
  try {
    const { payload } = await jwtVerify(token, secret, { algorithms: ['HS256'] });
    if (typeof payload['role'] !== 'string' || typeof payload.exp !== 'number') {
      return { ok: false, message: 'Fields `role` and `exp` are required in JWT' };
    }
    return { ok: true, claims: payload as Claims };
  } catch (err) {
    if (err instanceof errors.JWTExpired) {
      const exp = Number(err.payload.exp ?? 0);
      return {
        ok: false,
        message: `Token has expired ${Math.max(0, Math.floor(Date.now() / 1000) - exp)} seconds ago`,
      };
    }
    if (err instanceof errors.JWSSignatureVerificationFailed)
      return { ok: false, message: 'Failed to validate JWT signature' };
    return { ok: false, message: 'The token provided is not a valid JWT' };
  }
}
