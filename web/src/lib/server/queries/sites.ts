import type { TransactionSql } from 'postgres';
import { z } from 'zod';
import { connectionStatuses } from '../../rows.ts';
import { DEFAULT_INTERVAL_S, GATEWAY_STALE_AFTER_S, MISSED_INTERVALS } from '../../staleness.ts';

const count = z.coerce.number().int();
export const siteSummary = z.object({
  id: z.coerce.number().int(),
  slug: z.string(),
  name: z.string(),
  connection_id: z.coerce.number().int().nullable(),
  status: z.enum(connectionStatuses).nullable(),
  status_detail: z.string().nullable(),
  is_active: z.boolean().nullable(),
  last_message_at: z.coerce.date().nullable(),
  gateways_online: count,
  gateways_stale: count,
  gateways_offline: count,
  dataloggers_online: count,
  dataloggers_stale: count,
  sensors_online: count,
  sensors_stale: count,
});
export type SiteSummary = z.infer<typeof siteSummary>;

/**
 * The sites the user may see (RLS decides), with their connection's state and device counts by
 * state. The staleness rule is the one in staleness.ts, passed in as parameters.
 */
export async function listSiteSummaries(tx: TransactionSql, siteId: number | null = null): Promise<SiteSummary[]> {
  const rows = await tx`
    select s.id, s.slug, s.name,
      c.id as connection_id, c.status, c.status_detail, c.is_active, c.last_message_at,
      coalesce(g.online, 0) as gateways_online, coalesce(g.stale, 0) as gateways_stale, coalesce(g.offline, 0) as gateways_offline,
      coalesce(d.online, 0) as dataloggers_online, coalesce(d.stale, 0) as dataloggers_stale,
      coalesce(x.online, 0) as sensors_online, coalesce(x.stale, 0) as sensors_stale
    from public.site s
    left join public.mqtt_connection c on c.site_id = s.id
    left join lateral (
      select count(*) filter (where online is not false and last_seen_at >= now() - make_interval(secs => ${GATEWAY_STALE_AFTER_S})) as online,
             count(*) filter (where online is not false and last_seen_at < now() - make_interval(secs => ${GATEWAY_STALE_AFTER_S})) as stale,
             count(*) filter (where online is false) as offline
      from public.gateway where site_id = s.id
    ) g on true
    left join lateral (
      select count(*) filter (where last_seen_at >= now() - make_interval(secs => ${MISSED_INTERVALS} * coalesce(interval_s, ${DEFAULT_INTERVAL_S}))) as online,
             count(*) filter (where last_seen_at < now() - make_interval(secs => ${MISSED_INTERVALS} * coalesce(interval_s, ${DEFAULT_INTERVAL_S}))) as stale
      from public.datalogger where site_id = s.id
    ) d on true
    left join lateral (
      select count(*) filter (where x.last_value_at >= now() - make_interval(secs => ${MISSED_INTERVALS} * coalesce(dl.interval_s, ${DEFAULT_INTERVAL_S}))) as online,
             count(*) filter (where x.last_value_at is null or x.last_value_at < now() - make_interval(secs => ${MISSED_INTERVALS} * coalesce(dl.interval_s, ${DEFAULT_INTERVAL_S}))) as stale
      from public.sensor x join public.datalogger dl on dl.id = x.datalogger_id
      where x.site_id = s.id
    ) x on true
    where s.is_active and (${siteId}::bigint is null or s.id = ${siteId})
    order by s.name, s.id`;
  return z.array(siteSummary).parse(rows);
}
