import { z } from 'zod';

// Row shapes the dashboard shows, parsed with zod wherever rows come in: server loads (postgres.js
// gives int8 as strings and timestamps as Dates) and realtime payloads (JSON numbers and ISO
// strings). One schema per table, so a live update and a reloaded snapshot are the same object.
// Unknown columns are dropped, so a column added later does not leak into the page.

const id = z.coerce.number().int();
const int = z.coerce.number().int();
const at = z.coerce.date();
const optionalAt = z.coerce.date().nullable().catch(null);
const text = z.string().nullable();

// The vocabularies of the schema's CHECK constraints, written once for ingestor and dashboard.
export {
  backfillStates,
  connectionStatuses,
  devicePresences,
  logLevels,
  parsingLogKinds,
  type BackfillState,
  type ConnectionStatus,
  type DevicePresence,
} from '@bfg/ingestor/vocabulary';
import {
  backfillStates,
  connectionStatuses,
  devicePresences,
  logLevels,
  parsingLogKinds,
} from '@bfg/ingestor/vocabulary';

export const connectionRow = z.object({
  id,
  site_id: id,
  host: z.string(),
  port: int,
  protocol: z.enum(['mqtt', 'mqtts', 'ws', 'wss']),
  ws_path: z.string(),
  protocol_version: int,
  username: text,
  client_id: z.string(),
  clean_start: z.boolean(),
  session_expiry_s: int,
  keepalive_s: int,
  subscribe_filters: z.array(z.string()),
  reject_unauthorized: z.boolean(),
  share_group: text,
  is_active: z.boolean(),
  status: z.enum(connectionStatuses),
  status_detail: text,
  status_changed_at: at,
  last_connected_at: optionalAt,
  last_message_at: optionalAt,
});
export type ConnectionRow = z.infer<typeof connectionRow>;

// The keys of gatewayRow, dataloggerRow and sensorRow are also the columns the database puts in a
// site's `changes` broadcast, and the only ones whose change sends one (private.shown_columns in
// supabase/migrations/20261201000200_coalesced_site_changes.sql, presence added in
// 20261202000200_jobs.sql). Add a column here and there together:
// tests/integration/realtime-sql.test.ts fails while the two lists differ.
export const gatewayRow = z.object({
  id,
  site_id: id,
  ident: z.string(),
  name: text,
  online: z.boolean().nullable(),
  firmware: text,
  rssi_dbm: int.nullable(),
  last_seen_at: at,
  presence: z.enum(devicePresences),
});
export type GatewayRow = z.infer<typeof gatewayRow>;

export const dataloggerRow = z.object({
  id,
  site_id: id,
  gateway_id: id,
  ident: z.string(),
  name: text,
  model: text,
  interval_s: int.nullable(),
  last_seen_at: at,
  presence: z.enum(devicePresences),
});
export type DataloggerRow = z.infer<typeof dataloggerRow>;

export const sensorRow = z.object({
  id,
  site_id: id,
  datalogger_id: id,
  ident: z.string(),
  name: text,
  kind: text,
  unit: text,
  last_value: z.number().nullable(),
  last_value_at: optionalAt,
  last_quality: text,
  presence: z.enum(devicePresences),
});
export type SensorRow = z.infer<typeof sensorRow>;

export const discoveredTopicRow = z.object({
  connection_id: id,
  topic: z.string(),
  first_seen_at: at,
  last_seen_at: at,
  message_count: int,
  last_payload: text,
  last_payload_bytes: int.nullable(),
  is_processable: z.boolean(),
  matched_topic_id: id.nullable(),
  last_error: text,
});
export type DiscoveredTopicRow = z.infer<typeof discoveredTopicRow>;

export const topicPatternRow = z.object({
  id,
  connection_id: id,
  pattern: z.string(),
  parser: z.string(),
  qos: int,
  is_active: z.boolean(),
  priority: int,
  parser_config: z.record(z.string(), z.unknown()),
});
export type TopicPatternRow = z.infer<typeof topicPatternRow>;

/** A pattern's replay of archived messages (its last run), written by the ingestor's backfill job once per batch. */
export const backfillRunRow = z.object({
  topic_id: id,
  connection_id: id,
  state: z.enum(backfillStates),
  matched: int,
  processed: int,
  failed: int,
  readings: int,
  last_error: text,
  requested_at: at,
  started_at: optionalAt,
  finished_at: optionalAt,
  updated_at: at,
});
export type BackfillRunRow = z.infer<typeof backfillRunRow>;

export const connectionLogRow = z.object({
  id,
  connection_id: id,
  created_at: at,
  level: z.enum(logLevels),
  event: z.string(),
  status: text,
  detail: text,
});
export type ConnectionLogRow = z.infer<typeof connectionLogRow>;

export const parsingLogRow = z.object({
  id,
  connection_id: id,
  topic: z.string(),
  parser: text,
  kind: z.enum(parsingLogKinds),
  message: z.string(),
  issue_paths: z.array(z.string()),
  payload_excerpt: text,
  count: int,
  first_seen_at: at,
  last_seen_at: at,
});
export type ParsingLogRow = z.infer<typeof parsingLogRow>;

/** The tables the audit trail records (audit_log_table_check). */
export const auditedTables = [
  'site',
  'site_member',
  'mqtt_connection',
  'mqtt_connection_secret',
  'mqtt_topic',
  'auth.users',
] as const;

/** One change of one row, as the audit triggers record it (supabase/migrations/20261202000500_audit_trail.sql). */
export const auditRow = z
  .object({
    id,
    at,
    txid: int,
    actor_sub: text,
    actor_email: text,
    actor_role: text,
    db_user: z.string(),
    table_name: z.enum(auditedTables),
    op: z.enum(['INSERT', 'UPDATE', 'DELETE']),
    row_id: z.string(),
    site_id: id.nullable(),
    label: text,
    /** Column → {old, new}; a secret column → {secret: set | changed | cleared}, never a value. */
    changes: z.record(
      z.string(),
      z.union([
        z.object({ secret: z.enum(['set', 'changed', 'cleared']) }),
        z.object({ old: z.unknown().optional(), new: z.unknown().optional() }),
      ]),
    ),
  })
  // audit_log.actor, computed here as the database computes it: logical replication (Realtime)
  // does not carry generated columns.
  .transform((r) => ({ ...r, actor: (r.actor_email ?? r.actor_sub ?? r.db_user).toLowerCase() }));
export type AuditRow = z.infer<typeof auditRow>;
