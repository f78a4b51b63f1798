import { randomBytes } from 'node:crypto';
import { createClient, type User } from '@supabase/supabase-js';
import { BFG_SUPABASE_SERVER_URL, SUPABASE_SERVICE_ROLE_KEY } from '$app/env/private';
import { PUBLIC_SUPABASE_URL } from '$app/env/public';

/**
 * Accounts through Supabase Auth's admin API (GoTrue `/admin/users`; locally the stand-in in
 * supabase/local serves the same). It needs the service_role key, which only this server holds
 * (SUPABASE_SERVICE_ROLE_KEY, private): nothing here is importable from the browser, and no key,
 * hash or token goes into what the pages receive. Callers check that the user is an admin first.
 */

/** An account as the Users page shows it. */
export interface Account {
  id: string;
  email: string;
  isAdmin: boolean;
  /** Banned (GoTrue's ban_duration): sign-in and refresh are refused. */
  disabled: boolean;
  lastSignInAt: Date | null;
  createdAt: Date;
}

export interface AccountPage {
  accounts: Account[];
  total: number;
  page: number;
  perPage: number;
}

/** Refusal of the Auth server (duplicate e-mail, weak password, …), worded for the form. */
export class AccountError extends Error {}

/** Long enough that a ban means "disabled": GoTrue has no other flag for it. */
const DISABLED_FOR = '876000h';

let admin: ReturnType<typeof createClient>['auth']['admin'] | null = null;

/** Whether the Users page can work here (the service_role key is configured). */
export const accountsAvailable = (): boolean => Boolean(SUPABASE_SERVICE_ROLE_KEY);

function adminApi() {
  if (!SUPABASE_SERVICE_ROLE_KEY) throw new AccountError('SUPABASE_SERVICE_ROLE_KEY is not set on the dashboard.');
  admin ??= createClient(BFG_SUPABASE_SERVER_URL ?? PUBLIC_SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  }).auth.admin;
  return admin;
}

const toAccount = (u: User): Account => ({
  id: u.id,
  email: u.email ?? '',
  isAdmin: (u.app_metadata as { role?: unknown }).role === 'admin',
  disabled: Boolean(u.banned_until && new Date(u.banned_until).getTime() > Date.now()),
  lastSignInAt: u.last_sign_in_at ? new Date(u.last_sign_in_at) : null,
  createdAt: new Date(u.created_at),
});

type AdminResult<T> = { data: T; error: null } | { data: unknown; error: { message: string; status?: number } };

function check<T>(result: AdminResult<T>): T {
  if (result.error) {
    // 4xx: the Auth server refused what was asked (said next to the form); anything else is ours.
    if (result.error.status && result.error.status < 500) throw new AccountError(result.error.message);
    throw new Error(`Supabase Auth admin API: ${result.error.message}`, { cause: result.error });
  }
  return result.data;
}

/** A page of accounts, newest first (GoTrue's order). */
export async function listAccounts(page: number, perPage: number): Promise<AccountPage> {
  const data = check(await adminApi().listUsers({ page, perPage }));
  return {
    accounts: data.users.map(toAccount),
    total: 'total' in data && typeof data.total === 'number' ? data.total : data.users.length,
    page,
    perPage,
  };
}

export async function getAccount(id: string): Promise<Account> {
  return toAccount(check(await adminApi().getUserById(id)).user);
}

/** A password shown once: 24 characters of base64url (144 bits). */
export const generatePassword = (): string => randomBytes(18).toString('base64url');

/** Creates a confirmed account with a generated password (returned, to be shown once). */
export async function createAccount(email: string, isAdmin: boolean): Promise<{ account: Account; password: string }> {
  const password = generatePassword();
  const { user } = check(
    await adminApi().createUser({
      email,
      password,
      email_confirm: true,
      app_metadata: isAdmin ? { role: 'admin' } : {},
    }),
  );
  return { account: toAccount(user), password };
}

/** admin ↔ member: app_metadata.role, which the JWT carries and private.is_admin() reads. */
export async function setAccountRole(id: string, isAdmin: boolean): Promise<Account> {
  // GoTrue merges app_metadata shallowly; null removes the key.
  const { user } = check(await adminApi().updateUserById(id, { app_metadata: { role: isAdmin ? 'admin' : null } }));
  return toAccount(user);
}

/** A new generated password (returned, to be shown once); the account's sessions end. */
export async function resetAccountPassword(id: string): Promise<string> {
  const password = generatePassword();
  check(await adminApi().updateUserById(id, { password }));
  return password;
}

/**
 * Disables (bans) or enables an account. A disabled account cannot sign in or refresh; an access
 * token it already holds stays valid until it expires (at most an hour), as on Supabase.
 */
export async function setAccountDisabled(id: string, disabled: boolean): Promise<Account> {
  const { user } = check(await adminApi().updateUserById(id, { ban_duration: disabled ? DISABLED_FOR : 'none' }));
  return toAccount(user);
}
