import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { badRequest, type AuthApiError } from './api/api-error.ts';
import { findUserById, isBanned, type Tx, type UserRow } from './user-records.ts';

/**
 * Sessions and refresh-token rotation as GoTrue's legacy algorithm (refresh_token_algorithm_version
 * 0, its default) runs them: a sign-in makes a session and its first refresh token; a refresh
 * revokes the token presented and issues its child; presenting a revoked token outside the reuse
 * interval revokes the whole family (every token of the session) with `refresh_token_already_used`.
 * Only SHA-256 hashes of tokens are stored (GoTrue stores them as they are).
 */

export interface ClientInfo {
  userAgent?: string;
  ip?: string;
}

export interface IssuedSession {
  user: UserRow;
  sessionId: string;
  refreshToken: string;
  /** When the session was made: the `amr` password timestamp of every access token it gets. */
  signedInAt: Date;
}

export const hashToken = (token: string) => createHash('sha256').update(token).digest('hex');

/** 160 random bits, lowercase alphanumeric like GoTrue's legacy tokens (which are 12 characters). */
const newToken = () => randomBytes(20).toString('hex');

async function insertToken(tx: Tx, userId: string, sessionId: string, parentHash: string | null): Promise<string> {
  const token = newToken();
  await tx`insert into auth.refresh_tokens (token, user_id, session_id, parent) values (${hashToken(token)}, ${userId}, ${sessionId}, ${parentHash})`;
  return token;
}

/** GoTrue's GrantAuthenticatedUser: a new session with its first refresh token. */
export async function startSession(tx: Tx, user: UserRow, client: ClientInfo): Promise<IssuedSession> {
  const sessionId = randomUUID();
  const [session] = await tx<{ created_at: Date }[]>`
    insert into auth.sessions (id, user_id, user_agent, ip)
    values (${sessionId}, ${user.id}, ${client.userAgent ?? null}, ${client.ip ?? null})
    returning created_at`;
  const refreshToken = await insertToken(tx, user.id, sessionId, null);
  await tx`update auth.users set last_sign_in_at = now(), updated_at = now() where id = ${user.id}`;
  return { user: (await findUserById(tx, user.id))!, sessionId, refreshToken, signedInAt: session!.created_at };
}

interface TokenRow {
  id: string;
  token: string;
  user_id: string;
  revoked: boolean;
  updated_at: Date;
  session_id: string | null;
}

/**
 * The refresh_token grant. Errors after which nothing must be written are thrown; the reuse error
 * is returned. The token's row and its session are locked for the transaction, so
 * concurrent refreshes of one session run one after the other (GoTrue retries for up to 5 s
 * instead of waiting on the lock; the outcome is the same).
 */
export async function refreshSession(
  tx: Tx,
  refreshToken: string,
  reuseIntervalS: number,
  client: ClientInfo,
): Promise<IssuedSession | AuthApiError> {
  const [token] = await tx<TokenRow[]>`
    select id::text, token, user_id, revoked, updated_at, session_id from auth.refresh_tokens where token = ${hashToken(refreshToken)} for update`;
  const user = token && (await findUserById(tx, token.user_id));
  if (!token || !user) throw badRequest('refresh_token_not_found', 'Invalid Refresh Token: Refresh Token Not Found');
  if (isBanned(user)) throw badRequest('user_banned', 'Invalid Refresh Token: User Banned');
  const [session] = token.session_id
    ? await tx<{ id: string; created_at: Date; not_after: Date | null }[]>`
        select id::text, created_at, not_after from auth.sessions where id = ${token.session_id} for update`
    : [];
  if (!session) throw badRequest('session_not_found', 'Invalid Refresh Token: No Valid Session Found');
  if (session.not_after && session.not_after.getTime() <= Date.now())
    throw badRequest('session_expired', 'Invalid Refresh Token: Session Expired');

  // The token to swap for a new one: the one presented, unless it is the parent of the active one.
  let swap: { id: string; token: string } = token;
  if (token.revoked) {
    const [active] = await tx<{ id: string; token: string; parent: string | null }[]>`
      select id::text, token, parent from auth.refresh_tokens where session_id = ${session.id} and not revoked order by id desc limit 1`;
    if (active && active.parent === token.token) {
      // The client lost the answer to its last refresh (GoTrue: "not able to store the result").
      // GoTrue answers with the active token again; it is stored hashed here, so the active
      // token is rotated instead and the client gets its child.
      swap = active;
    } else if (!active || Date.now() > token.updated_at.getTime() + reuseIntervalS * 1000) {
      // Ours: with no active token the family was already revoked, and no reuse interval
      // brings it back (GoTrue lets a token revoked that way be reused within the interval).
      await tx`update auth.refresh_tokens set revoked = true, updated_at = now() where session_id = ${session.id} and not revoked`;
      // Returned, not thrown, so that the revocation commits (GoTrue's NewCommitWithError).
      return badRequest('refresh_token_already_used', 'Invalid Refresh Token: Already Used');
    }
  }
  await tx`update auth.refresh_tokens set revoked = true, updated_at = now() where id = ${swap.id}`;
  const issued = await insertToken(tx, user.id, session.id, swap.token);
  await tx`
    update auth.sessions set refreshed_at = (now() at time zone 'UTC'), updated_at = now(),
      user_agent = ${client.userAgent ?? null}, ip = ${client.ip ?? null}
    where id = ${session.id}`;
  return { user, sessionId: session.id, refreshToken: issued, signedInAt: session.created_at };
}

export async function sessionExists(tx: Tx, sessionId: string): Promise<boolean> {
  const [row] = await tx`select 1 from auth.sessions where id = ${sessionId}`;
  return row !== undefined;
}

/**
 * Ends sessions (their refresh tokens go with them, on delete cascade), as GoTrue's Logout,
 * LogoutSession and LogoutAllExceptMe: all of a user's, one, or all but one.
 */
export async function endSessions(tx: Tx, which: { userId: string; only?: string; except?: string }): Promise<void> {
  if (which.only) await tx`delete from auth.sessions where id = ${which.only} and user_id = ${which.userId}`;
  else if (which.except) await tx`delete from auth.sessions where user_id = ${which.userId} and id <> ${which.except}`;
  else await tx`delete from auth.sessions where user_id = ${which.userId}`;
}
