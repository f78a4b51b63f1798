import type { TransactionSql } from 'postgres';
import { z } from 'zod';
import { deviceState, gatewayState, type DeviceState } from '../../presence.ts';
import { connectionStatuses, devicePresences } from '../../rows.ts';

const count = z.coerce.number().int();

/** Devices of one kind grouped by what decides their state, as the query returns them. */
const presenceGroups = z.array(
  z.object({ online: z.boolean().nullable().default(null), presence: z.enum(devicePresences), n: count }),
);

/** How many devices of a kind are online and offline, by the rule in presence.ts. */
export interface StateCounts {
  online: number;
  offline: number;
}

function countStates(
  groups: z.infer<typeof presenceGroups>,
  stateOf: (group: z.infer<typeof presenceGroups>[number]) => DeviceState,
): StateCounts {
  const counts: StateCounts = { online: 0, offline: 0 };
  for (const group of groups) counts[stateOf(group)] += group.n;
  return counts;
}

export const siteSummary = z
  .object({
    id: z.coerce.number().int(),
    slug: z.string(),
    name: z.string(),
    connection_id: z.coerce.number().int().nullable(),
    status: z.enum(connectionStatuses).nullable(),
    status_detail: z.string().nullable(),
    is_active: z.boolean().nullable(),
    last_message_at: z.coerce.date().nullable(),
    parsing_problems_1h: count,
    connection_errors_1h: count,
    gateway_groups: presenceGroups,
    datalogger_groups: presenceGroups,
    sensor_groups: presenceGroups,
  })
  .transform(({ gateway_groups, datalogger_groups, sensor_groups, ...site }) => ({
    ...site,
    gateways: countStates(gateway_groups, gatewayState),
    dataloggers: countStates(datalogger_groups, deviceState),
    sensors: countStates(sensor_groups, deviceState),
  }));
export type SiteSummary = z.infer<typeof siteSummary>;

/**
 * The sites the user may see (RLS decides), with their connection's state and device counts by
 * state. Postgres groups the devices by the columns their state depends on (a handful of groups
 * per site); the state of each group comes from presence.ts, the rule the site page applies to
 * live rows too. The status summary adds what went wrong in the last hour: distinct parsing
 * problems seen (mqtt_parsing_log rows) and connection errors, each an index range per connection.
 */
export async function listSiteSummaries(tx: TransactionSql, siteId: number | null = null): Promise<SiteSummary[]> {
  const rows = await tx`
    select s.id, s.slug, s.name,
      c.id as connection_id, c.status, c.status_detail, c.is_active, c.last_message_at,
      (select count(*) from public.mqtt_parsing_log p
       where p.connection_id = c.id and p.last_seen_at > now() - interval '1 hour') as parsing_problems_1h,
      (select count(*) from public.mqtt_connection_log l
       where l.connection_id = c.id and l.created_at > now() - interval '1 hour' and l.level = 'error') as connection_errors_1h,
      (select coalesce(json_agg(json_build_object('online', g.online, 'presence', g.presence, 'n', g.n)), '[]')
       from (select online, presence, count(*) as n from public.gateway where site_id = s.id group by online, presence) g
      ) as gateway_groups,
      (select coalesce(json_agg(json_build_object('presence', d.presence, 'n', d.n)), '[]')
       from (select presence, count(*) as n from public.datalogger where site_id = s.id group by presence) d
      ) as datalogger_groups,
      (select coalesce(json_agg(json_build_object('presence', x.presence, 'n', x.n)), '[]')
       from (select presence, count(*) as n from public.sensor where site_id = s.id group by presence) x
      ) as sensor_groups
    from public.site s
    left join public.mqtt_connection c on c.site_id = s.id
    where s.is_active ${siteId !== null ? tx`and s.id = ${siteId}` : tx``}
    order by s.name, s.id`;
  return z.array(siteSummary).parse(rows);
}
