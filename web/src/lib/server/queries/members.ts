import type { TransactionSql } from 'postgres';
import { z } from 'zod';

/** Site ids per user id, from site_member (RLS: admins read every membership). */
export async function listMemberships(tx: TransactionSql, userIds: readonly string[]): Promise<Map<string, number[]>> {
  if (userIds.length === 0) return new Map();
  const rows = await tx`
    select user_id::text as user_id, array_agg(site_id order by site_id) as sites
    from public.site_member where user_id = any(${userIds as string[]}::uuid[])
    group by user_id`;
  const parsed = z.array(z.object({ user_id: z.string(), sites: z.array(z.coerce.number().int()) })).parse(rows);
  return new Map(parsed.map((r) => [r.user_id, r.sites]));
}

/**
 * Makes `userId` a member of exactly `siteIds` (RLS: admins only): the memberships that go and
 * the ones that come are each one row change, so the audit trail lists who gained or lost which
 * site, with the admin's JWT as who.
 */
export async function setMemberships(
  tx: TransactionSql,
  userId: string,
  siteIds: readonly number[],
): Promise<{ added: number; removed: number }> {
  const ids = [...siteIds];
  const removed = await tx`
    delete from public.site_member where user_id = ${userId} and not (site_id = any(${ids}::bigint[])) returning site_id`;
  const added = await tx`
    insert into public.site_member (site_id, user_id)
    select s.id, ${userId} from public.site s where s.id = any(${ids}::bigint[])
    on conflict do nothing
    returning site_id`;
  return { added: added.length, removed: removed.length };
}
