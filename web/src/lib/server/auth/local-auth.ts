import { mintAccessToken, verifyPassword } from '@bfg/local/auth';
import type { Sql } from 'postgres';
import { decodeJwt } from 'jose';
import { claimsSchema, userOf } from './claims.ts';
import { REFRESH_MARGIN_S, type AuthProvider, type Session } from './session.ts';
import { verifyAccessToken } from './verify-token.ts';

/** Access tokens live an hour, like Supabase Auth's default; the session cookie refreshes them. */
const ACCESS_TOKEN_TTL_S = 3600;
/**
 * Compared against when the e-mail is unknown, so that a wrong e-mail takes as long as a wrong
 * password (no account enumeration by timing). A valid hash of a random password.
 */
const DUMMY_HASH = 'scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

interface AccountRow {
  id: string;
  email: string;
  encrypted_password: string | null;
  app_metadata: Record<string, unknown>;
  /** Epoch seconds of the last change (user:add sets it when it resets a password or role). */
  changed_at: number;
}

/**
 * Local accounts (auth.users rows made by `npm run user:add`): the dashboard checks the password
 * and mints a JWT with Supabase Auth's claims, signed with the project JWT secret that Postgres
 * RLS (via claims) and the realtime server trust. Reading auth.users is the auth server's job, so
 * these queries run as the pool's role, never as the user.
 */
export function createLocalAuth(sql: Sql, jwtSecret: string): AuthProvider {
  const findAccount = async (where: { email: string } | { id: string }): Promise<AccountRow | undefined> => {
    const [row]: [AccountRow?] = await sql`
      select id::text, email, encrypted_password, raw_app_meta_data as app_metadata, extract(epoch from updated_at)::float8 as changed_at
      from auth.users
      where ${'email' in where ? sql`email = ${where.email.toLowerCase()}` : sql`id = ${where.id}`}
        and (banned_until is null or banned_until < now())`;
    return row;
  };

  const sessionFor = async (account: AccountRow): Promise<Session> => {
    const accessToken = await mintAccessToken(
      { id: account.id, email: account.email, appMetadata: account.app_metadata }, jwtSecret, ACCESS_TOKEN_TTL_S);
    // Signed just now with our own secret: its claims need reading, not verifying.
    const claims = claimsSchema.parse(decodeJwt(accessToken));
    return { accessToken, expiresAt: claims.exp, claims, user: userOf(claims) };
  };

  return {
    async signIn(email, password) {
      const account = await findAccount({ email });
      // Anything but a scrypt hash (none, or a Supabase bcrypt one) is checked against the dummy,
      // so such accounts take as long as the rest and cannot be told apart by timing.
      const stored = account?.encrypted_password?.startsWith('scrypt$') ? account.encrypted_password : DUMMY_HASH;
      const valid = (await verifyPassword(password, stored)) && stored !== DUMMY_HASH;
      if (!account || !valid) return { ok: false, message: 'Wrong e-mail or password.' };
      await sql`update auth.users set last_sign_in_at = now() where id = ${account.id}`;
      const session = await sessionFor(account);
      return { ok: true, session, cookies: { access: session.accessToken } };
    },

    async resume(cookies) {
      const verified = await verifyAccessToken(cookies.access, jwtSecret);
      if (!verified) return null;
      const now = Math.floor(Date.now() / 1000);
      if (!verified.expired && verified.claims.exp - now > REFRESH_MARGIN_S) {
        const { claims } = verified;
        return { session: { accessToken: cookies.access, expiresAt: claims.exp, claims, user: userOf(claims) } };
      }
      // Refresh only a token that has not expired yet (an open dashboard asks for a new one before
      // it does; a closed one signs in again), only if the account still exists, is not banned and
      // was not changed (password reset, role) since the token was issued; role and sites are read
      // again, so a demoted admin loses rights within the hour.
      if (verified.expired) return null;
      const account = await findAccount({ id: verified.claims.sub });
      const issuedAt = typeof verified.claims['iat'] === 'number' ? verified.claims['iat'] : 0;
      if (!account || account.changed_at > issuedAt + 1) return null;
      const session = await sessionFor(account);
      return { session, cookies: { access: session.accessToken } };
    },

    async signOut() {
      // Stateless tokens: clearing the cookie is the sign-out. A copied token stays valid until it
      // expires (at most an hour) and, like the cookie, can be refreshed until then; resetting the
      // password with `npm run user:add` ends every session of the account.
    },
  };
}
