import type { Sql } from 'postgres';
import { z } from 'zod';
import { LocalStackError } from '../errors.ts';
import { hashPassword } from './passwords.ts';

export const newUserSchema = z.object({
  email: z.email().transform((e) => e.toLowerCase()),
  password: z.string().min(12, 'at least 12 characters').max(200),
  role: z.enum(['admin', 'member']),
  /** Site slugs a member may see (admins see every site). */
  sites: z.array(z.string().min(1)).default([]),
});
export type NewUser = z.input<typeof newUserSchema>;

/**
 * Creates (or updates the password, role and sites of) a local account in auth.users, with the
 * app_metadata Supabase Auth would carry (`role: 'admin'` for admins) and its site memberships.
 */
export async function addUser(sql: Sql, input: NewUser): Promise<{ id: string; created: boolean }> {
  const parsed = newUserSchema.safeParse(input);
  if (!parsed.success) {
    throw new LocalStackError(`Invalid user:\n${parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`).join('\n')}`);
  }
  const user = parsed.data;
  const appMetadata = { provider: 'email', providers: ['email'], ...(user.role === 'admin' ? { role: 'admin' } : {}) };
  const encrypted = await hashPassword(user.password);
  return sql.begin(async (tx) => {
    const sites = await tx<{ id: string; slug: string }[]>`select id::text as id, slug from site where slug = any(${user.sites})`;
    const missing = user.sites.filter((slug) => !sites.some((s) => s.slug === slug));
    if (missing.length > 0) throw new LocalStackError(`No site with slug ${missing.map((m) => `"${m}"`).join(', ')}.`);
    const [row] = await tx<{ id: string; created: boolean }[]>`
      insert into auth.users (email, encrypted_password, raw_app_meta_data)
      values (${user.email}, ${encrypted}, ${tx.json(appMetadata)})
      on conflict (email) do update set encrypted_password = excluded.encrypted_password,
        raw_app_meta_data = excluded.raw_app_meta_data, updated_at = now()
      returning id::text as id, (xmax = 0) as created`;
    await tx`delete from site_member where user_id = ${row!.id}`;
    for (const site of sites) await tx`insert into site_member (site_id, user_id) values (${site.id}, ${row!.id})`;
    return row!;
  });
}
