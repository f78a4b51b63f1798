import { errors, jwtVerify } from 'jose';
import { z } from 'zod';
import { sessionExists } from '../sessions.ts';
import { findUserById, isBanned, type Tx, type UserRow } from '../user-records.ts';
import { AuthApiError, badRequest, forbidden } from './api-error.ts';
import type { AuthRequest } from './context.ts';
import { header } from './request.ts';

/** GoTrue's AdminRoles default. */
const ADMIN_ROLES = new Set(['service_role', 'supabase_admin']);

const claimsSchema = z.looseObject({
  sub: z.string().optional(),
  role: z.string().optional(),
  aud: z.union([z.string(), z.array(z.string())]).optional(),
  session_id: z.string().optional(),
});
export type AccessClaims = z.infer<typeof claimsSchema>;

const NIL_UUID = '00000000-0000-0000-0000-000000000000';

/** GoTrue's extractBearerToken and parseJWTClaims, with its statuses, codes and texts. */
export async function bearerClaims(request: AuthRequest): Promise<AccessClaims> {
  const match = /^[Bb]earer (\S+)$/.exec(header(request.req, 'authorization') ?? '');
  if (!match) throw new AuthApiError(401, 'no_authorization', 'This endpoint requires a valid Bearer token');
  try {
    const { payload } = await jwtVerify(match[1]!, request.settings.secret, { algorithms: ['HS256'] });
    const claims = claimsSchema.safeParse(payload);
    if (!claims.success)
      throw forbidden('bad_jwt', 'invalid JWT: unable to parse or verify signature, token has invalid claims');
    return claims.data;
  } catch (err) {
    if (err instanceof AuthApiError) throw err;
    throw forbidden('bad_jwt', `invalid JWT: unable to parse or verify signature, ${goJwtText(err)}`);
  }
}

/** golang-jwt's texts for the failures jose reports, so the message reads as GoTrue's. */
function goJwtText(err: unknown): string {
  if (err instanceof errors.JWTExpired) return 'token has invalid claims: token is expired';
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'token signature is invalid: signature is invalid';
  if (err instanceof errors.JOSEAlgNotAllowed) return 'token signature is invalid: signing method not allowed';
  if (err instanceof errors.JWTClaimValidationFailed) return `token has invalid claims: ${err.message}`;
  return 'token is malformed: could not parse the token';
}

/**
 * GoTrue's requireAuthentication: a valid token whose user exists and is not banned, and whose
 * session (when it names one) still exists — so a signed-out session's access token stops working
 * here at once, though it stays valid elsewhere (RLS, Realtime) until it expires, as on Supabase.
 */
export async function requireUser(
  tx: Tx,
  request: AuthRequest,
): Promise<{ claims: AccessClaims; user: UserRow; sessionId?: string }> {
  const claims = await bearerClaims(request);
  const loaded = await loadUserAndSession(tx, claims);
  if (isBanned(loaded.user)) throw forbidden('user_banned', 'User is banned');
  return { claims, ...loaded };
}

async function loadUserAndSession(tx: Tx, claims: AccessClaims): Promise<{ user: UserRow; sessionId?: string }> {
  if (!claims.sub) throw forbidden('bad_jwt', 'invalid claim: missing sub claim');
  if (!z.uuid().safeParse(claims.sub).success) throw badRequest('bad_jwt', 'invalid claim: sub claim must be a UUID');
  const user = await findUserById(tx, claims.sub);
  if (!user) throw forbidden('user_not_found', 'User from sub claim in JWT does not exist');
  const sessionId = claims.session_id && claims.session_id !== NIL_UUID ? claims.session_id : undefined;
  if (sessionId === undefined) return { user };
  if (!z.uuid().safeParse(sessionId).success)
    throw forbidden('bad_jwt', 'invalid claim: session_id claim must be a UUID');
  if (!(await sessionExists(tx, sessionId)))
    throw forbidden('session_not_found', 'Session from session_id claim in JWT does not exist');
  return { user, sessionId };
}

/**
 * GoTrue's requireAdminCredentials: a valid token with an admin role (the service_role key). A
 * token naming a session must name a live one. A user's token, whatever its app_metadata, is
 * refused with `not_admin`.
 */
export async function requireAdmin(tx: Tx, request: AuthRequest): Promise<void> {
  const claims = await bearerClaims(request);
  if (claims.session_id && claims.session_id !== NIL_UUID) await loadUserAndSession(tx, claims);
  if (!claims.role || !ADMIN_ROLES.has(claims.role)) throw forbidden('not_admin', 'User not allowed');
}
