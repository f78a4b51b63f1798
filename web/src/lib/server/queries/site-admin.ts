import type { TransactionSql } from 'postgres';
import { z } from 'zod';
import type { NewSite, SiteEdit } from '../../site-form.ts';

const id = z.coerce.number().int();
const count = z.coerce.number().int();

export const adminSiteRow = z.object({
  id,
  slug: z.string(),
  name: z.string(),
  description: z.string().nullable(),
  is_active: z.boolean(),
  created_at: z.coerce.date(),
  connection_id: id.nullable(),
  members: count,
  sensors: count,
});
export type AdminSiteRow = z.infer<typeof adminSiteRow>;

/** Every site, hidden ones included (RLS: admins see all), with what the list shows of each. */
export async function listSitesForAdmin(tx: TransactionSql): Promise<AdminSiteRow[]> {
  const rows = await tx`
    select s.id, s.slug, s.name, s.description, s.is_active, s.created_at, c.id as connection_id,
      (select count(*) from public.site_member m where m.site_id = s.id) as members,
      (select count(*) from public.sensor x where x.site_id = s.id) as sensors
    from public.site s
    left join public.mqtt_connection c on c.site_id = s.id
    order by s.name, s.id`;
  return z.array(adminSiteRow).parse(rows);
}

export async function createSite(tx: TransactionSql, s: NewSite): Promise<{ id: number; slug: string }> {
  const [row] = await tx`
    insert into public.site (slug, name, description, is_active)
    values (${s.slug}, ${s.name}, ${s.description}, ${s.is_active})
    returning id, slug`;
  return z.object({ id, slug: z.string() }).parse(row);
}

/** Name, description and visibility; the slug stays (it is in every topic). false: no such site. */
export async function updateSite(tx: TransactionSql, s: SiteEdit): Promise<boolean> {
  const rows = await tx`
    update public.site set name = ${s.name}, description = ${s.description}, is_active = ${s.is_active}
    where id = ${s.id}
    returning id`;
  return rows.length === 1;
}

/** Stop counting here: "more than …" is all a confirmation needs to say. */
const COUNT_CAP = 100_000;

export const siteImpact = z.object({
  id,
  slug: z.string(),
  name: z.string(),
  connection: z.boolean(),
  patterns: count,
  topics: count,
  gateways: count,
  dataloggers: count,
  sensors: count,
  members: count,
});
export type SiteImpact = z.infer<typeof siteImpact> & { cap: number };

/** What deleting a site takes with it (each count stops at COUNT_CAP), for the confirmation. */
export async function siteDeletionImpact(tx: TransactionSql, siteId: number): Promise<SiteImpact | undefined> {
  const [row] = await tx`
    select s.id, s.slug, s.name,
      exists (select 1 from public.mqtt_connection c where c.site_id = s.id) as connection,
      (select count(*) from public.mqtt_topic t join public.mqtt_connection c on c.id = t.connection_id where c.site_id = s.id) as patterns,
      (select count(*) from (select 1 from public.discovered_topic d join public.mqtt_connection c on c.id = d.connection_id
                             where c.site_id = s.id limit ${COUNT_CAP + 1}) x) as topics,
      (select count(*) from public.gateway g where g.site_id = s.id) as gateways,
      (select count(*) from public.datalogger d where d.site_id = s.id) as dataloggers,
      (select count(*) from public.sensor x where x.site_id = s.id) as sensors,
      (select count(*) from public.site_member m where m.site_id = s.id) as members
    from public.site s where s.id = ${siteId}`;
  return row ? { ...siteImpact.parse(row), cap: COUNT_CAP } : undefined;
}

/**
 * Deletes a site and, by the schema's cascades, its connection (with secrets, patterns,
 * discovered topics, logs and archive), devices, memberships; its readings go with its sensors.
 */
export async function deleteSite(tx: TransactionSql, siteId: number): Promise<boolean> {
  const rows = await tx`delete from public.site where id = ${siteId} returning id`;
  return rows.length === 1;
}
