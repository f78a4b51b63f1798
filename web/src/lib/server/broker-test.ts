import { randomBytes } from 'node:crypto';
import mqtt, { ErrorWithReasonCode } from 'mqtt';
import { clientOptions, describeBroker } from '@bfg/ingestor/broker-options';
import type { ConnectionSettings } from '../connection-form.ts';

/** The row shape the ingestor connects from (its broker-options code, reused here). */
type BrokerRow = Parameters<typeof clientOptions>[0];

/** The secrets a test connects with: what was typed, else what is stored. */
export interface TestSecrets {
  password: string | null;
  client_cert: string | null;
  client_key: string | null;
  ca_cert: string | null;
}

export type BrokerTestKind = 'connected' | 'refused' | 'tls' | 'dns' | 'network' | 'timeout' | 'closed' | 'invalid';

/** What the broker (or the network on the way) answered; shown next to the Test button. */
export interface BrokerTestResult {
  kind: BrokerTestKind;
  ok: boolean;
  /** One line for a person: "Connected", "Connection refused: Not authorized", "TLS: self-signed certificate". */
  message: string;
  /** The CONNACK reason code (MQTT 5) or return code (3.1.1), when the broker answered one. */
  reasonCode: number | null;
  /** The socket's or TLS library's error code (ECONNREFUSED, ENOTFOUND, DEPTH_ZERO_SELF_SIGNED_CERT, …). */
  errorCode: string | null;
  broker: string;
  elapsedMs: number;
}

/**
 * How long a test waits for the CONNACK. The answer must reach the page within 10 s (issue 13);
 * this leaves the request the rest.
 */
export const BROKER_TEST_TIMEOUT_MS = 8000;

const TLS_CODES =
  /^(ERR_SSL_|ERR_TLS_|CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT$|SELF_SIGNED_CERT_IN_CHAIN$|HOSTNAME_MISMATCH$|EPROTO$)/;
const DNS_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EAI_NONAME', 'EAI_NODATA']);

/** The connection as the ingestor would connect it, with the entered settings and secrets. */
function brokerRow(siteSlug: string, s: ConnectionSettings, secrets: TestSecrets): BrokerRow {
  // Never the connection's own client id: a broker ends the older session of a client id that
  // connects again, which would throw the ingestor's live session off the broker.
  const base = s.client_id || `bfg-${siteSlug}`;
  const clientId = `${base.slice(0, 100)}-test-${randomBytes(3).toString('hex')}`;
  return {
    id: '0',
    siteId: '0',
    siteSlug,
    host: s.host,
    port: s.port,
    protocol: s.protocol,
    wsPath: s.ws_path,
    protocolVersion: s.protocol_version,
    username: s.username,
    clientId,
    cleanStart: true,
    sessionExpiryS: 0,
    keepaliveS: s.keepalive_s,
    subscribeFilters: [],
    sessionFilters: [],
    rejectUnauthorized: s.reject_unauthorized,
    shareGroup: null,
    password: secrets.password,
    clientCert: secrets.client_cert,
    clientKey: secrets.client_key,
    caCert: secrets.ca_cert,
  };
}

function classify(err: unknown): Pick<BrokerTestResult, 'kind' | 'message' | 'reasonCode' | 'errorCode'> {
  const error = err instanceof Error ? err : new Error(String(err));
  if (error instanceof ErrorWithReasonCode) {
    return { kind: 'refused', message: error.message, reasonCode: error.code, errorCode: null };
  }
  const raw = (error as unknown as { code?: unknown }).code;
  const code = typeof raw === 'string' ? raw : null;
  if (error.message === 'connack timeout')
    return {
      kind: 'timeout',
      message: 'No CONNACK: the broker did not answer in time',
      reasonCode: null,
      errorCode: null,
    };
  if (code && DNS_CODES.has(code))
    return { kind: 'dns', message: `DNS: ${error.message}`, reasonCode: null, errorCode: code };
  if (code && TLS_CODES.test(code))
    return { kind: 'tls', message: `TLS: ${error.message}`, reasonCode: null, errorCode: code };
  if (/certificate|ssl|tls|PEM|asn1/i.test(error.message))
    return { kind: 'tls', message: `TLS: ${error.message}`, reasonCode: null, errorCode: code };
  return { kind: 'network', message: error.message, reasonCode: null, errorCode: code };
}

/**
 * Connects once with the entered settings, without saving anything: the ingestor's own client
 * options (broker-options.ts) with a throwaway client id and a clean session that expires at
 * once, so the broker keeps nothing of it and the live session is untouched. Resolves with what
 * came first — CONNACK (accepted or refused with its reason), a DNS, TLS or socket error, the
 * socket closing, or the timeout — and always ends the client.
 */
export function testBroker(
  siteSlug: string,
  settings: ConnectionSettings,
  secrets: TestSecrets,
  timeoutMs = BROKER_TEST_TIMEOUT_MS,
): Promise<BrokerTestResult> {
  const row = brokerRow(siteSlug, settings, secrets);
  const broker = describeBroker(row);
  const started = performance.now();
  const done = (r: Pick<BrokerTestResult, 'kind' | 'message' | 'reasonCode' | 'errorCode'>): BrokerTestResult => ({
    ...r,
    ok: r.kind === 'connected',
    broker,
    elapsedMs: Math.round(performance.now() - started),
  });
  return new Promise((resolve) => {
    let client: mqtt.MqttClient;
    let settled = false;
    const finish = (result: BrokerTestResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client?.removeAllListeners();
      // Errors after the answer (the socket torn down by end) must not become unhandled.
      client?.on('error', () => undefined);
      client?.end(true);
      resolve(result);
    };
    const timer = setTimeout(
      () =>
        finish(
          done({
            kind: 'timeout',
            message: `No answer within ${Math.round(timeoutMs / 1000)} s`,
            reasonCode: null,
            errorCode: null,
          }),
        ),
      timeoutMs,
    );
    try {
      client = mqtt.connect({
        ...clientOptions(row, 1),
        clean: true,
        connectTimeout: timeoutMs,
        reconnectPeriod: 0,
        ...(row.protocolVersion === 5 ? { properties: { sessionExpiryInterval: 0 } } : {}),
      });
    } catch (err) {
      // Options MQTT.js refuses before connecting (e.g. unreadable TLS material).
      const c = classify(err);
      finish(done(c.kind === 'network' ? { ...c, kind: 'invalid' } : c));
      return;
    }
    client.on('connect', (connack) => {
      const code = (connack as { reasonCode?: number; returnCode?: number }).reasonCode ?? connack.returnCode ?? 0;
      finish(
        done({
          kind: 'connected',
          message: `Connected (MQTT ${settings.protocol_version === 5 ? '5' : '3.1.1'}, CONNACK ${code})`,
          reasonCode: code,
          errorCode: null,
        }),
      );
    });
    // A socket reset before the TLS handshake ends is a TLS failure (a plain port, a proxy that
    // refuses the handshake), not a network one: say so.
    let secured = false;
    if (settings.protocol === 'mqtts') client.stream?.once('secureConnect', () => (secured = true));
    const classified = (err: unknown) => {
      const c = classify(err);
      return settings.protocol === 'mqtts' && !secured && (c.errorCode === 'ECONNRESET' || c.errorCode === 'EPIPE')
        ? { ...c, kind: 'tls' as const, message: `TLS handshake failed: ${c.message} (is this port a TLS listener?)` }
        : c;
    };
    client.on('error', (err) => finish(done(classified(err))));
    // MQTT.js passes on only socket errors that carry a code; the others end in 'close'.
    let streamError: unknown = null;
    client.stream?.on('error', (err: unknown) => {
      streamError = err;
    });
    client.on('close', () =>
      finish(
        done(
          streamError
            ? classified(streamError)
            : {
                kind: 'closed',
                message: 'The connection closed before the broker answered',
                reasonCode: null,
                errorCode: null,
              },
        ),
      ),
    );
  });
}
