import type { TransactionSql } from 'postgres';

/** A gateway merged from all messages of a batch (latest status wins). */
export interface GatewayUpsert {
  siteId: string;
  ident: string;
  lastSeenAt: Date;
  online: boolean | null;
  firmware: string | null;
  uptimeS: number | null;
  rssiDbm: number | null;
  statusAt: Date | null;
}

export interface DataloggerUpsert {
  siteId: string;
  gatewayId: string;
  ident: string;
  lastSeenAt: Date;
  model: string | null;
  serial: string | null;
  firmware: string | null;
  intervalS: number | null;
  infoAt: Date | null;
}

export interface SensorUpsert {
  siteId: string;
  dataloggerId: string;
  ident: string;
  name: string | null;
  kind: string | null;
  unit: string | null;
}

const iso = (d: Date | null) => (d ? d.toISOString() : null);

/**
 * Creates gateways on first sight and records what their messages said. NULL fields leave the
 * stored value alone (a data message knows nothing of firmware). Returns every row's id.
 */
export async function upsertGateways(tx: TransactionSql, rows: GatewayUpsert[]): Promise<Map<string, string>> {
  if (rows.length === 0) return new Map();
  const json = rows.map((r) => ({
    site_id: r.siteId,
    ident: r.ident,
    last_seen_at: iso(r.lastSeenAt),
    online: r.online,
    firmware: r.firmware,
    uptime_s: r.uptimeS,
    rssi_dbm: r.rssiDbm,
    status_at: iso(r.statusAt),
  }));
  const result = await tx<{ id: string; siteId: string; ident: string }[]>`
    insert into gateway as g (site_id, ident, last_seen_at, online, firmware, uptime_s, rssi_dbm, status_at)
    select site_id, ident, last_seen_at, online, firmware, uptime_s, rssi_dbm, status_at
    from jsonb_to_recordset(${tx.json(json)}) as v (site_id bigint, ident text, last_seen_at timestamptz, online boolean,
                                                 firmware text, uptime_s bigint, rssi_dbm integer, status_at timestamptz)
    on conflict (site_id, ident) do update set
      last_seen_at = greatest(g.last_seen_at, excluded.last_seen_at),
      ${tx.unsafe(presenceOnline('g'))},
      online = case when excluded.status_at >= coalesce(g.status_at, '-infinity') then coalesce(excluded.online, g.online) else g.online end,
      firmware = coalesce(excluded.firmware, g.firmware),
      uptime_s = coalesce(excluded.uptime_s, g.uptime_s),
      rssi_dbm = coalesce(excluded.rssi_dbm, g.rssi_dbm),
      status_at = greatest(g.status_at, excluded.status_at)
    returning id::text as id, site_id::text as "siteId", ident`;
  return new Map(result.map((r) => [`${r.siteId}/${r.ident}`, r.id]));
}

/**
 * A message at least as new as the last one brings an offline device back online (the staleness
 * job set it offline). A replayed or late message that is older does not: it says nothing about now.
 */
function presenceOnline(alias: 'g' | 'd'): string {
  const fresh = `excluded.last_seen_at >= ${alias}.last_seen_at`;
  return `presence = case when ${fresh} then 'online' else ${alias}.presence end,
      presence_changed_at = case when ${fresh} and ${alias}.presence <> 'online' then now() else ${alias}.presence_changed_at end`;
}

export async function upsertDataloggers(tx: TransactionSql, rows: DataloggerUpsert[]): Promise<Map<string, string>> {
  if (rows.length === 0) return new Map();
  const json = rows.map((r) => ({
    site_id: r.siteId,
    gateway_id: r.gatewayId,
    ident: r.ident,
    last_seen_at: iso(r.lastSeenAt),
    model: r.model,
    serial: r.serial,
    firmware: r.firmware,
    interval_s: r.intervalS,
    info_at: iso(r.infoAt),
  }));
  const result = await tx<{ id: string; gatewayId: string; ident: string }[]>`
    insert into datalogger as d (site_id, gateway_id, ident, last_seen_at, model, serial, firmware, interval_s, info_at)
    select site_id, gateway_id, ident, last_seen_at, model, serial, firmware, interval_s, info_at
    from jsonb_to_recordset(${tx.json(json)}) as v (site_id bigint, gateway_id bigint, ident text, last_seen_at timestamptz,
                                                 model text, serial text, firmware text, interval_s integer, info_at timestamptz)
    on conflict (gateway_id, ident) do update set
      last_seen_at = greatest(d.last_seen_at, excluded.last_seen_at),
      ${tx.unsafe(presenceOnline('d'))},
      model = coalesce(excluded.model, d.model),
      serial = coalesce(excluded.serial, d.serial),
      firmware = coalesce(excluded.firmware, d.firmware),
      interval_s = coalesce(excluded.interval_s, d.interval_s),
      info_at = greatest(d.info_at, excluded.info_at)
    returning id::text as id, gateway_id::text as "gatewayId", ident`;
  return new Map(result.map((r) => [`${r.gatewayId}/${r.ident}`, r.id]));
}

/**
 * Creates sensors on first sight and applies catalogue details (name, kind, unit) from info
 * messages. The update always runs on conflict so that RETURNING yields the id of existing rows;
 * callers only send sensors they have no id for, or that carry details. Returns every row's id.
 */
export async function upsertSensors(
  tx: TransactionSql,
  rows: SensorUpsert[],
): Promise<{ id: string; dataloggerId: string; ident: string }[]> {
  if (rows.length === 0) return [];
  const json = rows.map((r) => ({
    site_id: r.siteId,
    datalogger_id: r.dataloggerId,
    ident: r.ident,
    name: r.name,
    kind: r.kind,
    unit: r.unit,
  }));
  const result = await tx<{ id: string; dataloggerId: string; ident: string }[]>`
    insert into sensor as s (site_id, datalogger_id, ident, name, kind, unit)
    select site_id, datalogger_id, ident, name, kind, unit
    from jsonb_to_recordset(${tx.json(json)}) as v (site_id bigint, datalogger_id bigint, ident text, name text, kind text, unit text)
    on conflict (datalogger_id, ident) do update set
      name = coalesce(excluded.name, s.name),
      kind = coalesce(excluded.kind, s.kind),
      unit = coalesce(excluded.unit, s.unit)
    returning id::text as id, datalogger_id::text as "dataloggerId", ident`;
  return [...result];
}
