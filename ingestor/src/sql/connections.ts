import type { Db } from '../db.ts';
import { LeaseLostError } from '../leases.ts';
import { boundIdleTransaction, leaseKey, type LeaseToken } from './leases.ts';
import type { ConnectionEvent, ConnectionStatus, LogLevel } from '../vocabulary.ts';
import type { TopicPattern } from '../topic-matcher.ts';

/** An active connection with everything needed to connect, secrets included (service role only). */
export interface ConnectionRow {
  id: string;
  siteId: string;
  siteSlug: string;
  host: string;
  port: number;
  protocol: 'mqtt' | 'mqtts' | 'ws' | 'wss';
  wsPath: string;
  protocolVersion: 4 | 5;
  username: string | null;
  clientId: string;
  cleanStart: boolean;
  sessionExpiryS: number;
  keepaliveS: number;
  subscribeFilters: string[];
  /** What the broker session may hold, as recorded by the ingestor (`$share/…` prefix included). */
  sessionFilters: string[];
  rejectUnauthorized: boolean;
  shareGroup: string | null;
  password: string | null;
  clientCert: string | null;
  clientKey: string | null;
  caCert: string | null;
}

export async function loadActiveConnections(sql: Db): Promise<ConnectionRow[]> {
  return sql<ConnectionRow[]>`
    select c.id::text as id, c.site_id::text as "siteId", s.slug as "siteSlug", c.host, c.port, c.protocol,
           c.ws_path as "wsPath", c.protocol_version as "protocolVersion", c.username, c.client_id as "clientId",
           c.clean_start as "cleanStart", c.session_expiry_s as "sessionExpiryS", c.keepalive_s as "keepaliveS",
           c.subscribe_filters as "subscribeFilters", c.session_filters as "sessionFilters", c.reject_unauthorized as "rejectUnauthorized",
           c.share_group as "shareGroup", x.password, x.client_cert as "clientCert", x.client_key as "clientKey",
           x.ca_cert as "caCert"
    from mqtt_connection c
    join site s on s.id = c.site_id
    left join mqtt_connection_secret x on x.connection_id = c.id
    where c.is_active
    order by c.id`;
}

/**
 * Records what the broker session may hold (slot 0: the connection's session, else the member's).
 * session_filters is in no NOTIFY trigger's column list, so this does not wake the control loop.
 * Only under the lease: rejects with LeaseLostError when another instance holds it now (a
 * SUBSCRIBE must not go out then).
 */
export async function recordSessionFilters(
  sql: Db,
  lease: LeaseToken,
  instance: string,
  filters: string[],
): Promise<void> {
  const result =
    lease.slot === 0
      ? await sql`
          update mqtt_connection set session_filters = ${filters}::text[]
          where id = ${lease.connectionId} and owner_instance = ${instance} and lease_epoch = ${lease.epoch}`
      : await sql`
          update mqtt_connection_member set session_filters = ${filters}::text[]
          where connection_id = ${lease.connectionId} and slot = ${lease.slot} and owner_instance = ${instance}
            and lease_epoch = ${lease.epoch}`;
  if (result.count === 0) throw new LeaseLostError('lease lost: another instance holds the connection now');
}

/** What each member session (slot > 0) of the active connections may hold, by `leaseKey`. */
export async function loadMemberSessionFilters(sql: Db): Promise<Map<string, string[]>> {
  const rows = await sql<{ connectionId: string; slot: number; sessionFilters: string[] }[]>`
    select m.connection_id::text as "connectionId", m.slot, m.session_filters as "sessionFilters"
    from mqtt_connection_member m
    join mqtt_connection c on c.id = m.connection_id
    where c.is_active`;
  return new Map(rows.map((r) => [leaseKey(r.connectionId, r.slot), r.sessionFilters]));
}

/** Active patterns of the given connections, by connection id. */
export async function loadActivePatterns(sql: Db, connectionIds: string[]): Promise<Map<string, TopicPattern[]>> {
  const rows = await sql<(TopicPattern & { connectionId: string })[]>`
    select id::text as id, connection_id::text as "connectionId", pattern, parser, parser_config as "parserConfig", priority
    from mqtt_topic
    where is_active and connection_id = any(${connectionIds}::bigint[])`;
  const byConnection = new Map<string, TopicPattern[]>();
  for (const { connectionId, ...pattern } of rows) {
    const list = byConnection.get(connectionId) ?? [];
    list.push(pattern);
    byConnection.set(connectionId, list);
  }
  return byConnection;
}

export type { ConnectionEvent, ConnectionStatus } from '../vocabulary.ts';

export interface StatusChange {
  connectionId: string;
  /** The session: 0 = the connection's own, 1, 2, … its members (shared connections). */
  slot: number;
  /** The lease epoch the session runs under: the row is written only while it is unchanged. */
  epoch: string;
  status: ConnectionStatus;
  detail: string | null;
  event: ConnectionEvent;
  level: LogLevel;
  at: Date;
}

/**
 * Records status transitions: the session's observed state (the connection row for slot 0, its
 * mqtt_connection_member row otherwise), and one log row per transition. A status is written only
 * if nobody acquired the lease since the session's (the epoch is unchanged; released is fine: a
 * stopped session says "disconnected" before its lease goes), so an instance that lost a
 * connection never overwrites what its new owner reports.
 */
export async function writeStatusChanges(
  sql: Db,
  latest: StatusChange[],
  log: StatusChange[],
  options: { instance: string; idleTimeoutMs: number },
): Promise<void> {
  const { instance } = options;
  await sql.begin(async (tx) => {
    // It locks connection rows: a pause in the middle must not keep a takeover out.
    if (latest.length > 0) await boundIdleTransaction(tx, options.idleTimeoutMs);
    for (const change of latest) {
      if (change.slot === 0) {
        await tx`
          update mqtt_connection set
            status = ${change.status},
            status_detail = ${change.detail},
            last_connected_at = case when ${change.status} = 'connected' then ${change.at} else last_connected_at end
          where id = ${change.connectionId} and lease_epoch = ${change.epoch}`;
      } else {
        await tx`
          update mqtt_connection_member set
            status = ${change.status},
            status_detail = ${change.detail},
            last_connected_at = case when ${change.status} = 'connected' then ${change.at} else last_connected_at end
          where connection_id = ${change.connectionId} and slot = ${change.slot} and lease_epoch = ${change.epoch}`;
      }
    }
    if (log.length > 0) {
      await tx`
        insert into mqtt_connection_log (connection_id, created_at, level, event, status, detail, instance)
        select v.connection_id, v.created_at, v.level, v.event, v.status, v.detail, ${instance}
        from jsonb_to_recordset(${tx.json(
          log.map((l) => ({
            connection_id: l.connectionId,
            created_at: l.at.toISOString(),
            level: l.level,
            event: l.event,
            status: l.status,
            detail: l.detail?.slice(0, 4000) ?? null,
          })),
        )}) as v (connection_id bigint, created_at timestamptz, level text, event text, status text, detail text)
        where exists (select 1 from mqtt_connection c where c.id = v.connection_id)`;
    }
  });
}

export async function writeLastMessageAt(sql: Db, rows: { connectionId: string; at: Date }[]): Promise<void> {
  if (rows.length === 0) return;
  await sql`
    update mqtt_connection c set last_message_at = greatest(c.last_message_at, v.at)
    from unnest(${rows.map((r) => r.connectionId)}::bigint[], ${rows.map((r) => r.at.toISOString())}::timestamptz[]) as v (id, at)
    where c.id = v.id`;
}
