import { randomBytes } from 'node:crypto';
import type { Sql } from 'postgres';
import { z } from 'zod';
import { LocalStackError } from '../errors.ts';
import { AuthApiError, badRequest, notFound, unprocessable } from './api/api-error.ts';
import { parseGoDuration } from './ban-duration.ts';
import { hashPassword } from './passwords.ts';
import { endSessions } from './sessions.ts';
import { findUserByEmail, findUserById, USER_COLUMNS, type Tx, type UserRow } from './user-records.ts';

/**
 * Ours, stricter than GoTrue's default of 6: the length `npm run user:add` has always asked for.
 * Refused with GoTrue's weak_password error and text.
 */
export const MIN_PASSWORD_LENGTH = 12;
const DUPLICATE_EMAIL = 'A user with this email address has already been registered';

const metadata = z.record(z.string(), z.unknown()).nullish();

/** The body of POST/PUT /admin/users (GoTrue's AdminUserParams); phone and password_hash are not served here. */
export const adminUserParamsSchema = z.object({
  id: z.string().optional(),
  aud: z.string().optional(),
  role: z.string().optional(),
  email: z.string().optional(),
  password: z.string().nullish(),
  email_confirm: z.boolean().optional(),
  user_metadata: metadata,
  app_metadata: metadata,
  ban_duration: z.string().optional(),
});
export type AdminUserParams = z.infer<typeof adminUserParamsSchema>;

function validateEmail(email: string): string {
  if (email.length > 255) throw badRequest('validation_failed', 'An email address is too long');
  if (!z.email().safeParse(email).success)
    throw badRequest('validation_failed', 'Unable to validate email address: invalid format');
  return email.toLowerCase();
}

function checkPasswordStrength(password: string): void {
  if ([...password].length < MIN_PASSWORD_LENGTH) {
    throw new AuthApiError(422, 'weak_password', `Password should be at least ${MIN_PASSWORD_LENGTH} characters.`, {
      weak_password: { reasons: ['length'] },
    });
  }
}

/** banned_until for a ban_duration ("none" or 0 lifts a ban), undefined when none was given. */
function bannedUntil(banDuration: string | undefined): Date | null | undefined {
  if (banDuration === undefined || banDuration === '') return undefined;
  if (banDuration === 'none') return null;
  const ms = parseGoDuration(banDuration);
  if (ms === null)
    throw badRequest('validation_failed', `invalid format for ban duration: time: invalid duration "${banDuration}"`);
  return ms === 0 ? null : new Date(Date.now() + ms);
}

/** GoTrue's UpdateAppMetaData/UpdateUserMetaData: a shallow merge in which null deletes a key. */
function mergeMetadata(current: Record<string, unknown>, patch: Record<string, unknown>): Record<string, unknown> {
  const merged = { ...current };
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete merged[key];
    else merged[key] = value;
  }
  return merged;
}

/**
 * POST /admin/users, also what `npm run user:add` does for a new address: the checks and
 * defaults of GoTrue's adminUserCreate (email required here, duplicate refused, a random
 * password when none is given, app_metadata provider "email", role "authenticated").
 */
export async function createUser(tx: Tx, params: AdminUserParams): Promise<UserRow> {
  if (!params.email) throw badRequest('validation_failed', 'Cannot create a user without either an email or phone');
  const email = validateEmail(params.email);
  if (await findUserByEmail(tx, email)) throw unprocessable('email_exists', DUPLICATE_EMAIL);
  const password = params.password ? params.password : randomBytes(48).toString('base64url');
  checkPasswordStrength(password);
  let id: string | undefined;
  if (params.id !== undefined && params.id !== '') {
    if (!z.uuid().safeParse(params.id).success)
      throw badRequest('validation_failed', 'ID must conform to the uuid v4 format');
    if (/^0{8}-0{4}-0{4}-0{4}-0{12}$/.test(params.id)) throw badRequest('validation_failed', 'ID cannot be a nil uuid');
    id = params.id;
  }
  const appMetadata = mergeMetadata({ provider: 'email', providers: ['email'] }, params.app_metadata ?? {});
  const userMetadata = mergeMetadata({}, params.user_metadata ?? {});
  const banned = bannedUntil(params.ban_duration) ?? null;
  const encrypted = await hashPassword(password);
  const [row] = await tx.unsafe<{ id: string }[]>(
    `insert into auth.users (id, aud, role, email, encrypted_password, raw_app_meta_data, raw_user_meta_data, email_confirmed_at, banned_until)
     values (coalesce($1::uuid, gen_random_uuid()), $2, $3, $4, $5, $6::jsonb, $7::jsonb, case when $8 then now() end, $9)
     returning id::text as id`,
    [
      id ?? null,
      params.aud || 'authenticated',
      params.role || 'authenticated',
      email,
      encrypted,
      appMetadata as never,
      userMetadata as never,
      params.email_confirm ?? false,
      banned,
    ],
  );
  return (await findUserById(tx, row!.id))!;
}

/**
 * PUT /admin/users/{id}, also what `npm run user:add` does for a known address. A new password
 * ends every session of the user (GoTrue's User.UpdatePassword logs the user out everywhere).
 */
export async function updateUser(tx: Tx, id: string, params: AdminUserParams): Promise<UserRow> {
  const user = await loadUser(tx, id);
  const email = params.email ? validateEmail(params.email) : undefined;
  if (email && email !== user.email && (await findUserByEmail(tx, email)))
    throw unprocessable('email_exists', DUPLICATE_EMAIL);
  const banned = bannedUntil(params.ban_duration);
  if (params.password !== undefined && params.password !== null) checkPasswordStrength(params.password);
  const encrypted = params.password ? await hashPassword(params.password) : undefined;
  await tx.unsafe(
    `update auth.users set
       role = coalesce($2, role), email = coalesce($3, email),
       email_confirmed_at = case when $4 then coalesce(email_confirmed_at, now()) else email_confirmed_at end,
       encrypted_password = coalesce($5, encrypted_password),
       raw_app_meta_data = $6::jsonb, raw_user_meta_data = $7::jsonb,
       banned_until = case when $8 then $9 else banned_until end,
       updated_at = now()
     where id = $1`,
    [
      id,
      params.role || null,
      email ?? null,
      params.email_confirm ?? false,
      encrypted ?? null,
      (params.app_metadata ? mergeMetadata(user.app_metadata, params.app_metadata) : user.app_metadata) as never,
      (params.user_metadata ? mergeMetadata(user.user_metadata, params.user_metadata) : user.user_metadata) as never,
      banned !== undefined,
      banned ?? null,
    ],
  );
  if (encrypted) await endSessions(tx, { userId: id });
  return (await findUserById(tx, id))!;
}

/** DELETE /admin/users/{id}: the row goes, and with it (on delete cascade) its sessions and tokens. */
export async function deleteUser(tx: Tx, id: string): Promise<void> {
  await loadUser(tx, id);
  await tx`delete from auth.users where id = ${id}`;
}

/** GET /admin/users: newest first, GoTrue's page/per_page (default 50) and the total for its headers. */
export async function listUsers(tx: Tx, page: number, perPage: number): Promise<{ users: UserRow[]; total: number }> {
  const users = await tx.unsafe<UserRow[]>(
    `select ${USER_COLUMNS} from auth.users order by created_at desc, id limit $1 offset $2`,
    [perPage, (page - 1) * perPage],
  );
  const [count] = await tx<{ n: number }[]>`select count(*)::int as n from auth.users`;
  return { users: [...users], total: count!.n };
}

/** GoTrue's loadUser middleware: a UUID, and a user with it. */
export async function loadUser(tx: Tx, id: string): Promise<UserRow> {
  if (!z.uuid().safeParse(id).success) throw notFound('validation_failed', 'user_id must be an UUID');
  const user = await findUserById(tx, id);
  if (!user) throw notFound('user_not_found', 'User not found');
  return user;
}

export const newUserSchema = z.object({
  email: z.email().transform((e) => e.toLowerCase()),
  password: z.string().min(MIN_PASSWORD_LENGTH, `at least ${MIN_PASSWORD_LENGTH} characters`).max(200),
  role: z.enum(['admin', 'member']),
  /** Site slugs a member may see (admins see every site). */
  sites: z.array(z.string().min(1)).default([]),
});
export type NewUser = z.input<typeof newUserSchema>;

/**
 * `npm run user:add`: creates (or sets the password, role and sites of) a local account through
 * the same code as the admin API's create and update, with the app_metadata BFG's RLS reads
 * (`role: 'admin'` for admins, removed for members) and its site memberships. The address counts
 * as confirmed (an operator vouches for it). Setting the password ends the account's sessions.
 */
export async function addUser(sql: Sql, input: NewUser): Promise<{ id: string; created: boolean }> {
  const parsed = newUserSchema.safeParse(input);
  if (!parsed.success) {
    throw new LocalStackError(
      `Invalid user:\n${parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`).join('\n')}`,
    );
  }
  const user = parsed.data;
  const params: AdminUserParams = {
    email: user.email,
    password: user.password,
    email_confirm: true,
    app_metadata: { provider: 'email', providers: ['email'], role: user.role === 'admin' ? 'admin' : null },
  };
  try {
    return await sql.begin(async (tx) => {
      const sites = await tx<
        { id: string; slug: string }[]
      >`select id::text as id, slug from site where slug = any(${user.sites})`;
      const missing = user.sites.filter((slug) => !sites.some((s) => s.slug === slug));
      if (missing.length > 0)
        throw new LocalStackError(`No site with slug ${missing.map((m) => `"${m}"`).join(', ')}.`);
      const existing = await findUserByEmail(tx, user.email);
      const row = existing ? await updateUser(tx, existing.id, params) : await createUser(tx, params);
      await tx`delete from site_member where user_id = ${row.id}`;
      for (const site of sites) await tx`insert into site_member (site_id, user_id) values (${site.id}, ${row.id})`;
      return { id: row.id, created: !existing };
    });
  } catch (err) {
    if (err instanceof AuthApiError) throw new LocalStackError(`Invalid user: ${err.message}`);
    throw err;
  }
}
