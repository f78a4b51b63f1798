import type { Row, TransactionSql } from 'postgres';

/** Every query of the Auth API runs in a transaction (one per request, or the caller's). */
export type Tx = TransactionSql;

export interface UserRow {
  id: string;
  aud: string;
  role: string;
  email: string | null;
  encrypted_password: string | null;
  email_confirmed_at: Date | null;
  last_sign_in_at: Date | null;
  app_metadata: Record<string, unknown>;
  user_metadata: Record<string, unknown>;
  created_at: Date;
  updated_at: Date;
  banned_until: Date | null;
  is_anonymous: boolean;
}

/** The auth.users columns every query here reads, aliased to GoTrue's JSON names. */
export const USER_COLUMNS = `id::text as id, aud, role, email, encrypted_password, email_confirmed_at, last_sign_in_at,
  raw_app_meta_data as app_metadata, raw_user_meta_data as user_metadata, created_at, updated_at, banned_until, is_anonymous`;

export async function findUserById(tx: Tx, id: string): Promise<UserRow | undefined> {
  const [row] = await tx.unsafe<(UserRow & Row)[]>(`select ${USER_COLUMNS} from auth.users where id = $1`, [id]);
  return row;
}

export async function findUserByEmail(tx: Tx, email: string): Promise<UserRow | undefined> {
  const [row] = await tx.unsafe<(UserRow & Row)[]>(`select ${USER_COLUMNS} from auth.users where email = $1`, [
    email.toLowerCase(),
  ]);
  return row;
}

export const isBanned = (user: UserRow) => user.banned_until !== null && user.banned_until.getTime() > Date.now();

/**
 * A user as GoTrue's models.User marshals it (omitempty fields left out when unset). There is no
 * auth.identities table locally, so `identities` is always empty, and no phone sign-in, so
 * `phone` is always "".
 */
export function userJson(user: UserRow): Record<string, unknown> {
  const iso = (d: Date | null) => (d ? d.toISOString() : undefined);
  return {
    id: user.id,
    aud: user.aud,
    role: user.role,
    email: user.email ?? '',
    email_confirmed_at: iso(user.email_confirmed_at),
    phone: '',
    confirmed_at: iso(user.email_confirmed_at),
    last_sign_in_at: iso(user.last_sign_in_at),
    app_metadata: user.app_metadata,
    user_metadata: user.user_metadata,
    identities: [],
    created_at: user.created_at.toISOString(),
    updated_at: user.updated_at.toISOString(),
    banned_until: iso(user.banned_until),
    is_anonymous: user.is_anonymous,
  };
}
