import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getFreePort, startDemoBroker, type DemoBroker } from '@bfg/local';
import { testBroker, type TestSecrets } from '../../web/src/lib/server/broker-test.ts';
import type { ConnectionSettings } from '../../web/src/lib/connection-form.ts';
import { startMosquitto, type RunningMosquitto } from '../support/mosquitto.ts';

/**
 * Test connection (the dashboard's connection forms): the entered settings tried once against a
 * real broker with the ingestor's own client options, without saving — and what comes back is
 * the broker's answer (CONNACK accepted, or refused with its reason code), the TLS or DNS error,
 * the refused socket, or the timeout, always within the deadline. Against Mosquitto (password,
 * TLS with its own CA) and the embedded demo broker (MQTT 3.1.1).
 */

const settings = (s: Partial<ConnectionSettings>): ConnectionSettings => ({
  host: '127.0.0.1',
  port: 1883,
  protocol: 'mqtt',
  ws_path: '/mqtt',
  protocol_version: 5,
  username: null,
  client_id: '',
  clean_start: false,
  session_expiry_s: 86_400,
  keepalive_s: 30,
  subscribe_filters: [],
  reject_unauthorized: true,
  share_group: null,
  ...s,
});
const noSecrets: TestSecrets = { password: null, client_cert: null, client_key: null, ca_cert: null };

let mosquitto: RunningMosquitto;
let demo: DemoBroker;
/** Accepts TCP connections and never says anything: a broker that does not answer. */
let silent: net.Server;
let silentPort: number;
const sockets = new Set<net.Socket>();

beforeAll(async () => {
  mosquitto = await startMosquitto({ users: { bfg: 'right-password' }, tls: true });
  demo = await startDemoBroker({ port: await getFreePort(), host: '127.0.0.1' });
  silentPort = await getFreePort();
  silent = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => silent.listen(silentPort, '127.0.0.1', resolve));
});
afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await new Promise((resolve) => silent?.close(resolve));
  await demo?.close();
  await mosquitto?.stop();
});

describe('Test connection', () => {
  it('connects with the right credentials (MQTT 5 and 3.1.1) and leaves no session behind', async () => {
    const v5 = await testBroker('site-a', settings({ port: mosquitto.port, username: 'bfg' }), {
      ...noSecrets,
      password: 'right-password',
    });
    expect(v5).toMatchObject({
      kind: 'connected',
      ok: true,
      reasonCode: 0,
      broker: `mqtt://127.0.0.1:${mosquitto.port}`,
    });
    expect(v5.message).toContain('MQTT 5');
    const v4 = await testBroker('site-a', settings({ port: demo.port, protocol_version: 4 }), noSecrets);
    expect(v4).toMatchObject({ kind: 'connected', ok: true, reasonCode: 0 });
  });

  it("reports the broker's refusal with its reason code: a wrong password, no credentials", async () => {
    const wrong = await testBroker('site-a', settings({ port: mosquitto.port, username: 'bfg' }), {
      ...noSecrets,
      password: 'wrong-password',
    });
    // MQTT 5 CONNACK 0x87 Not authorized: what Mosquitto answers a wrong password with.
    expect(wrong).toMatchObject({ kind: 'refused', ok: false, reasonCode: 135 });
    expect(wrong.message).toBe('Connection refused: Not authorized');
    const anonymous = await testBroker('site-a', settings({ port: mosquitto.port, protocol_version: 4 }), noSecrets);
    // MQTT 3.1.1 return code 5: not authorized.
    expect(anonymous).toMatchObject({ kind: 'refused', reasonCode: 5 });
    expect(anonymous.message).toContain('Not authorized');
  });

  it('reports TLS errors: an unknown CA, and plain MQTT spoken to a TLS port; with the CA it connects', async () => {
    const tls = settings({ port: mosquitto.tlsPort!, protocol: 'mqtts', username: 'bfg' });
    const unknownCa = await testBroker('site-a', tls, { ...noSecrets, password: 'right-password' });
    expect(unknownCa.kind).toBe('tls');
    expect(unknownCa.errorCode).toMatch(/SELF_SIGNED|UNABLE_TO_VERIFY/);
    const withCa = await testBroker('site-a', tls, {
      ...noSecrets,
      password: 'right-password',
      ca_cert: mosquitto.caCert!,
    });
    expect(withCa).toMatchObject({ kind: 'connected', broker: `mqtts://127.0.0.1:${mosquitto.tlsPort}` });
    const tlsToPlain = await testBroker('site-a', settings({ port: mosquitto.port, protocol: 'mqtts' }), noSecrets);
    expect(tlsToPlain.kind, JSON.stringify(tlsToPlain)).toBe('tls');
  });

  it('reports a refused socket, a name that does not resolve and a broker that never answers, within the deadline', async () => {
    const closed = await testBroker('site-a', settings({ port: await getFreePort() }), noSecrets);
    expect(closed).toMatchObject({ kind: 'network', errorCode: 'ECONNREFUSED' });
    const dns = await testBroker('site-a', settings({ host: 'no-such-broker.invalid' }), noSecrets);
    expect(dns.kind).toBe('dns');
    expect(dns.errorCode).toMatch(/^(ENOTFOUND|EAI_AGAIN)$/);
    const started = Date.now();
    const timeout = await testBroker('site-a', settings({ port: silentPort }), noSecrets, 1500);
    expect(timeout.kind).toBe('timeout');
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it('never takes the connection’s own client id (that would end the live session on the broker)', async () => {
    // Mosquitto ends an older session of a client id that connects again: keep one open and test.
    const { default: mqtt } = await import('mqtt');
    const live = await mqtt.connectAsync(mosquitto.url, {
      clientId: 'bfg-site-a',
      username: 'bfg',
      password: 'right-password',
      reconnectPeriod: 0,
    });
    let closed = false;
    live.on('close', () => (closed = true));
    try {
      const result = await testBroker('site-a', settings({ port: mosquitto.port, username: 'bfg' }), {
        ...noSecrets,
        password: 'right-password',
      });
      expect(result.kind).toBe('connected');
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(closed).toBe(false);
    } finally {
      await live.endAsync();
    }
  });
});
