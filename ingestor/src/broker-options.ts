import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import type { IClientOptions } from 'mqtt';
import type { ConnectionRow } from './sql/connections.ts';

/**
 * Everything that, when changed, requires a new client: a digest (secrets included, never
 * logged). Not the filters and the share group: a live client subscribes and unsubscribes them
 * in place (BrokerSubscriptions). Not session_filters either: the session writes it itself.
 */
export function settingsFingerprint(row: ConnectionRow): string {
  const { siteSlug: _slug, subscribeFilters: _filters, shareGroup: _group, sessionFilters: _held, ...settings } = row;
  return createHash('sha256').update(JSON.stringify(settings)).digest('hex');
}

/** The broker as it may appear in logs and status details: no credentials. */
export function describeBroker(row: ConnectionRow): string {
  return `${row.protocol}://${row.host}:${row.port}${row.protocol.startsWith('ws') ? row.wsPath : ''}`;
}

/**
 * MQTT.js writes packets with mqtt-packet, which on first use fills a cache with a Buffer for
 * every one of the 65,536 message ids (7 MB of heap in 65,536 objects, for the life of the
 * process) to spare an allocation per PUBACK. The ingestor's whole memory budget is 200 MB: off,
 * with mqtt-packet's own switch, on the instance MQTT.js loads. (Where MQTT.js is bundled, as in
 * the dashboard's build, there is no such instance to reach, and nothing to save.)
 */
try {
  const fromMqtt = createRequire(createRequire(import.meta.url).resolve('mqtt'));
  (fromMqtt('mqtt-packet') as { writeToStream: { cacheNumbers: boolean } }).writeToStream.cacheNumbers = false;
} catch {
  // MQTT.js is not a package here.
}

/**
 * MQTT.js logs through `debug` on every step of every packet; even switched off, each call costs
 * (a few percent of the ingestor's CPU at 20,000 messages/s). Unless DEBUG asks for MQTT.js' log,
 * it gets none.
 */
const mqttLog = /mqttjs/.test(process.env['DEBUG'] ?? '') ? {} : { log: () => undefined };

/**
 * MQTT.js options for a connection row. Reconnection is ours (`reconnectPeriod: 0`): MQTT.js only
 * knows a fixed period and does not retry refused CONNACKs, while a session retries every failure
 * with capped exponential backoff and jitter — one owner per retry loop.
 */
export function clientOptions(row: ConnectionRow, receiveMaximum: number): IClientOptions {
  const tls = row.protocol === 'mqtts' || row.protocol === 'wss';
  return {
    protocol: row.protocol,
    host: row.host,
    port: row.port,
    ...(row.protocol.startsWith('ws') ? { path: row.wsPath } : {}),
    protocolVersion: row.protocolVersion,
    clientId: row.clientId,
    clean: row.cleanStart,
    keepalive: row.keepaliveS,
    ...(row.username ? { username: row.username } : {}),
    ...(row.password ? { password: row.password } : {}),
    reconnectPeriod: 0,
    connectTimeout: 10_000,
    // The session makes the subscriptions itself on every connect (BrokerSubscriptions): MQTT.js
    // would only repeat the ones it made, and only after a reconnect without a kept session.
    resubscribe: false,
    ...mqttLog,
    ...(row.protocolVersion === 5
      ? { properties: { sessionExpiryInterval: row.cleanStart ? 0 : row.sessionExpiryS, receiveMaximum } }
      : {}),
    ...(tls
      ? {
          rejectUnauthorized: row.rejectUnauthorized,
          ...(row.caCert ? { ca: row.caCert } : {}),
          ...(row.clientCert ? { cert: row.clientCert } : {}),
          ...(row.clientKey ? { key: row.clientKey } : {}),
        }
      : {}),
  };
}

/** Subscription filters, as `$share/<group>/<filter>` when the connection is shared between instances. */
export function subscriptionFilters(row: ConnectionRow): string[] {
  return row.subscribeFilters.map((filter) => (row.shareGroup ? `$share/${row.shareGroup}/${filter}` : filter));
}
