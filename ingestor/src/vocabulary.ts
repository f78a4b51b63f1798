/**
 * The words the schema's CHECK constraints allow, written once for every package: the ingestor
 * writes them, the dashboard shows and filters by them. tests/integration/vocabulary.test.ts
 * compares each list with its constraint in the migrated database, so renaming one without the
 * other fails. Pure data, no imports: the dashboard bundles it for the browser too.
 */

/** mqtt_connection.status: what the ingestor observes of a connection. */
export const connectionStatuses = [
  'disconnected',
  'connecting',
  'connected',
  'reconnecting',
  'error',
  'disabled',
] as const;
export type ConnectionStatus = (typeof connectionStatuses)[number];

/** mqtt_connection_log.event. */
export const connectionEvents = ['connect', 'disconnect', 'reconnect', 'error', 'subscribe', 'status'] as const;
export type ConnectionEvent = (typeof connectionEvents)[number];

/** mqtt_connection_log.level. */
export const logLevels = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof logLevels)[number];

/** mqtt_parsing_log.kind: why a payload could not be ingested. */
export const parsingLogKinds = [
  'invalid_json',
  'schema',
  'unknown_parser',
  'too_large',
  'processing',
  'invalid_topic',
] as const;
export type ParsingLogKind = (typeof parsingLogKinds)[number];

/** gateway.presence, datalogger.presence, sensor.presence: reporting within the expected interval or not. */
export const devicePresences = ['online', 'offline'] as const;
export type DevicePresence = (typeof devicePresences)[number];

/** backfill_run.state: a pattern's replay of archived messages. */
export const backfillStates = ['queued', 'running', 'done', 'failed'] as const;
export type BackfillState = (typeof backfillStates)[number];
