import { z } from 'zod';
import { verifyPassword } from '../../passwords.ts';
import { refreshSession, startSession, type IssuedSession } from '../../sessions.ts';
import { mintAccessToken } from '../../tokens.ts';
import { findUserByEmail, isBanned, userJson } from '../../user-records.ts';
import { AuthApiError, badRequest, sendJson } from '../api-error.ts';
import { clientInfo, type AuthApiSettings, type AuthRequest } from '../context.ts';
import { parseBody } from '../request.ts';

const INVALID_LOGIN = 'Invalid login credentials';
/**
 * Compared against when the address is unknown or has no scrypt hash, so that such a sign-in
 * takes as long as a wrong password (no account enumeration by timing). GoTrue answers these
 * at once; ours is the stricter choice.
 */
const DUMMY_HASH = 'scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

const passwordGrantSchema = z.object({
  email: z.string().optional(),
  phone: z.string().optional(),
  password: z.string().optional(),
});
const refreshGrantSchema = z.object({ refresh_token: z.string().optional() });

/** POST /token?grant_type=password|refresh_token (GoTrue's Token, ResourceOwnerPasswordGrant, RefreshTokenGrant). */
export async function token(request: AuthRequest): Promise<void> {
  const grantType = request.url.searchParams.get('grant_type');
  if (grantType === 'password') return sendJson(request.res, 200, await passwordGrant(request));
  if (grantType === 'refresh_token') return sendJson(request.res, 200, await refreshGrant(request));
  // GoTrue's own choice of code for this one.
  throw badRequest('invalid_credentials', 'unsupported_grant_type');
}

async function passwordGrant(request: AuthRequest): Promise<Record<string, unknown>> {
  const params = await parseBody(request.req, passwordGrantSchema);
  if (params.email && params.phone)
    throw badRequest('validation_failed', 'Only an email address or phone number should be provided on login.');
  if (params.phone) throw new AuthApiError(422, 'phone_provider_disabled', 'Phone logins are disabled');
  if (!params.email) throw badRequest('validation_failed', 'missing email or phone');
  const email = params.email;
  const { sql } = request.settings;
  const user = await sql.begin((tx) => findUserByEmail(tx, email));
  const stored = user?.encrypted_password?.startsWith('scrypt$') ? user.encrypted_password : DUMMY_HASH;
  const valid = (await verifyPassword(params.password ?? '', stored)) && stored !== DUMMY_HASH;
  // GoTrue's order: no account or no password, banned, wrong password, unconfirmed address.
  if (!user || stored === DUMMY_HASH) throw badRequest('invalid_credentials', INVALID_LOGIN);
  if (isBanned(user)) throw badRequest('user_banned', 'User is banned');
  if (!valid) throw badRequest('invalid_credentials', INVALID_LOGIN);
  if (!user.email_confirmed_at) throw badRequest('email_not_confirmed', 'Email not confirmed');
  const issued = await sql.begin((tx) => startSession(tx, user, clientInfo(request.req)));
  return tokenResponse(request.settings, issued);
}

async function refreshGrant(request: AuthRequest): Promise<Record<string, unknown>> {
  const { refresh_token: refreshToken } = await parseBody(request.req, refreshGrantSchema);
  // GoTrue: an absent token is an OAuth error; anything shorter than 12 characters is not valid.
  if (!refreshToken)
    throw new AuthApiError(400, 'invalid_request', 'refresh_token required', {
      error: 'invalid_request',
      error_description: 'refresh_token required',
    });
  if (refreshToken.length < 12) throw badRequest('validation_failed', 'Refresh token is not valid');
  const { sql, refreshTokenReuseIntervalS } = request.settings;
  const result = await sql.begin((tx) =>
    refreshSession(tx, refreshToken, refreshTokenReuseIntervalS, clientInfo(request.req)),
  );
  if (result instanceof AuthApiError) throw result;
  return tokenResponse(request.settings, result);
}

/** GoTrue's AccessTokenResponse. */
async function tokenResponse(settings: AuthApiSettings, issued: IssuedSession): Promise<Record<string, unknown>> {
  const { user } = issued;
  const accessToken = await mintAccessToken(
    { id: user.id, email: user.email ?? '', appMetadata: user.app_metadata, userMetadata: user.user_metadata },
    settings.jwtSecret,
    settings.accessTokenTtlS,
    { id: issued.sessionId, signedInAt: issued.signedInAt },
  );
  const now = Math.floor(Date.now() / 1000);
  return {
    access_token: accessToken,
    token_type: 'bearer',
    expires_in: settings.accessTokenTtlS,
    expires_at: now + settings.accessTokenTtlS,
    refresh_token: issued.refreshToken,
    user: userJson(user),
  };
}
