import { userJson } from '../../user-records.ts';
import { badRequest, sendJson } from '../api-error.ts';
import { requireUser } from '../bearer.ts';
import type { AuthRequest } from '../context.ts';

/** GET /user (GoTrue's UserGet): the token's user, if its session is still alive. */
export async function getUser(request: AuthRequest): Promise<void> {
  const { claims, user } = await request.settings.sql.begin((tx) => requireUser(tx, request));
  const aud = Array.isArray(claims.aud) ? claims.aud[0] : claims.aud;
  if (aud !== 'authenticated') throw badRequest('validation_failed', "Token audience doesn't match request audience");
  sendJson(request.res, 200, userJson(user));
}
