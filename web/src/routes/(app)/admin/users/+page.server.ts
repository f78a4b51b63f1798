import { error, fail } from '@sveltejs/kit';
import postgres from 'postgres';
import { z } from 'zod';
import { asUser } from '#lib/server/as-user.ts';
import {
  AccountError,
  accountsAvailable,
  createAccount,
  getAccount,
  listAccounts,
  resetAccountPassword,
  setAccountDisabled,
  setAccountRole,
} from '#lib/server/auth/accounts.ts';
import { requireAdmin } from '#lib/server/guards.ts';
import { logger } from '#lib/server/logger.ts';
import { listMemberships, setMemberships } from '#lib/server/queries/members.ts';
import { listSitesForAdmin } from '#lib/server/queries/site-admin.ts';
import type { Session } from '#lib/server/auth/index.ts';
import type { Actions, PageServerLoad } from './$types';

const PER_PAGE = 50;

/**
 * Users and members (admins only: 403 for anyone else). Accounts through Supabase Auth's admin
 * API with the server's service_role key; memberships are site_member rows written as the
 * signed-in admin (RLS), so the audit trail names the admin.
 */
export const load = (async ({ locals, url, depends }) => {
  depends('app:admin-users');
  const session = requireAdmin(locals);
  const page = z.coerce
    .number()
    .int()
    .min(1)
    .max(100_000)
    .catch(1)
    .parse(url.searchParams.get('page') ?? 1);
  const sites = (await asUser(session.claims, (tx) => listSitesForAdmin(tx))).map((s) => ({
    id: s.id,
    slug: s.slug,
    name: s.name,
    is_active: s.is_active,
  }));
  if (!accountsAvailable())
    return { available: false as const, sites, accounts: [], total: 0, page, perPage: PER_PAGE };
  const accounts = await listAccounts(page, PER_PAGE);
  const memberships = await asUser(session.claims, (tx) =>
    listMemberships(
      tx,
      accounts.accounts.map((a) => a.id),
    ),
  );
  return {
    available: true as const,
    sites,
    accounts: accounts.accounts.map((a) => ({ ...a, sites: memberships.get(a.id) ?? [] })),
    total: accounts.total,
    page,
    perPage: PER_PAGE,
  };
}) satisfies PageServerLoad;

const newAccountSchema = z.object({
  email: z
    .email({ error: 'Enter an e-mail address' })
    .max(255)
    .transform((e) => e.toLowerCase()),
  role: z.enum(['admin', 'member'], { error: 'Choose admin or member' }),
  sites: z.array(z.coerce.number().int().positive()).max(10_000),
});
const accountId = z.uuid({ error: 'Missing or invalid account' });

async function fieldsOf(request: Request) {
  const data = await request.formData();
  const text = (name: string) => {
    const v = data.get(name);
    return typeof v === 'string' ? v : undefined;
  };
  return { text, sites: data.getAll('site').filter((v): v is string => typeof v === 'string') };
}

/** The account an action is about; refused for the admin's own account where it would lock them out. */
function target(session: Session, id: string | undefined, selfAllowed: boolean): string {
  const parsed = accountId.safeParse(id);
  if (!parsed.success) error(400, 'Missing or invalid account.');
  if (!selfAllowed && parsed.data === session.user.id)
    error(400, 'You cannot do this to your own account; ask another admin.');
  return parsed.data;
}

/** Auth server refusals (duplicate address, weak password, unknown account) go back to the form. */
async function accountCall<T>(action: string, work: () => Promise<T>) {
  try {
    return { ok: true as const, value: await work() };
  } catch (err) {
    if (err instanceof AccountError)
      return { ok: false as const, failure: fail(400, { action, message: err.message }) };
    throw err;
  }
}

export const actions = {
  create: async ({ locals, request }) => {
    const session = requireAdmin(locals);
    const { text, sites } = await fieldsOf(request);
    const parsed = newAccountSchema.safeParse({ email: text('email'), role: text('role'), sites });
    if (!parsed.success)
      return fail(400, {
        action: 'create',
        values: { email: text('email') ?? '', role: text('role') ?? 'member' },
        errors: z.flattenError(parsed.error).fieldErrors,
        message: 'The account needs fixing.',
      });
    const created = await accountCall('create', () => createAccount(parsed.data.email, parsed.data.role === 'admin'));
    if (!created.ok) return created.failure;
    const { account, password } = created.value;
    if (parsed.data.role === 'member' && parsed.data.sites.length > 0)
      await asUser(session.claims, (tx) => setMemberships(tx, account.id, parsed.data.sites));
    logger.info({ admin: session.user.email, account: account.email, role: parsed.data.role }, 'account created');
    // Shown once: it is in this answer only, never stored or logged.
    return { action: 'create', password: { email: account.email, password } };
  },

  setRole: async ({ locals, request }) => {
    const session = requireAdmin(locals);
    const { text } = await fieldsOf(request);
    const id = target(session, text('id'), false);
    const role = z.enum(['admin', 'member']).safeParse(text('role'));
    if (!role.success) error(400, 'Choose admin or member.');
    const changed = await accountCall('setRole', () => setAccountRole(id, role.data === 'admin'));
    if (!changed.ok) return changed.failure;
    logger.info({ admin: session.user.email, account: changed.value.email, role: role.data }, 'account role changed');
    return { action: 'setRole', changed: { email: changed.value.email, role: role.data } };
  },

  resetPassword: async ({ locals, request }) => {
    const session = requireAdmin(locals);
    const { text } = await fieldsOf(request);
    const id = target(session, text('id'), true);
    if (text('confirm') !== 'yes') return fail(400, { action: 'resetPassword', message: 'Confirm the reset.' });
    const reset = await accountCall('resetPassword', async () => ({
      account: await getAccount(id),
      password: await resetAccountPassword(id),
    }));
    if (!reset.ok) return reset.failure;
    logger.info({ admin: session.user.email, account: reset.value.account.email }, 'account password reset');
    return { action: 'resetPassword', password: { email: reset.value.account.email, password: reset.value.password } };
  },

  setDisabled: async ({ locals, request }) => {
    const session = requireAdmin(locals);
    const { text } = await fieldsOf(request);
    const id = target(session, text('id'), false);
    const disabled = z.enum(['true', 'false']).safeParse(text('disabled'));
    if (!disabled.success) error(400, 'Missing or invalid disabled.');
    const changed = await accountCall('setDisabled', () => setAccountDisabled(id, disabled.data === 'true'));
    if (!changed.ok) return changed.failure;
    logger.info(
      { admin: session.user.email, account: changed.value.email, disabled: changed.value.disabled },
      'account disabled or enabled',
    );
    return { action: 'setDisabled', changed: { email: changed.value.email, disabled: changed.value.disabled } };
  },

  /** The sites a member sees: exactly the ticked ones. */
  setSites: async ({ locals, request }) => {
    const session = requireAdmin(locals);
    const { text, sites } = await fieldsOf(request);
    const id = target(session, text('id'), true);
    const siteIds = z.array(z.coerce.number().int().positive()).max(10_000).safeParse(sites);
    if (!siteIds.success) error(400, 'Invalid sites.');
    try {
      const changes = await asUser(session.claims, (tx) => setMemberships(tx, id, siteIds.data));
      return { action: 'setSites', sitesSaved: { id, ...changes } };
    } catch (err) {
      // The account is gone (site_member references auth.users).
      if (err instanceof postgres.PostgresError && err.code === '23503')
        return fail(400, { action: 'setSites', message: 'No such account (any more).' });
      throw err;
    }
  },
} satisfies Actions;
