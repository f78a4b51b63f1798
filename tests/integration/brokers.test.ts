import { randomBytes } from 'node:crypto';
import mqtt, { type IClientOptions, type IConnackPacket, type MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { getFreePort, startDemoBroker, type DemoBroker } from '@bfg/local';
import { startMosquitto, type RunningMosquitto } from '../support/mosquitto.ts';
import { connectClient, publishMany } from '../support/mqtt-client.ts';
import { Inbox } from '../support/wait.ts';

/**
 * The broker harnesses the ingestor tests stand on: the embedded aedes demo broker and a real
 * Mosquitto (passwords, TLS, restarts). Each behaviour is proven with real clients and events.
 */

interface Received {
  topic: string;
  payload: string;
  retain: boolean;
}

const clients: MqttClient[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.endAsync(true)));
});

/** connectClient, with the client ended after the test. */
async function client(url: string, opts: IClientOptions = {}): Promise<MqttClient> {
  const connected = await connectClient(url, opts);
  clients.push(connected);
  return connected;
}

/**
 * A client whose message listener is attached before it connects: messages a broker queued for a
 * persistent session arrive right after CONNACK, before connectClient's caller could listen.
 */
async function listeningClient(
  url: string,
  opts: IClientOptions,
): Promise<{ client: MqttClient; inbox: Inbox<Received>; sessionPresent: boolean }> {
  const inbox = new Inbox<Received>();
  const created = mqtt.connect(url, { reconnectPeriod: 0, ...opts });
  clients.push(created);
  created.on('message', (topic, payload, packet) =>
    inbox.push({ topic, payload: payload.toString(), retain: packet.retain }),
  );
  // Rejects on the first error; afterwards the listener stays as a harmless no-op, so a late
  // error does not go unhandled.
  const connack = await new Promise<IConnackPacket>((resolve, reject) => {
    created.once('connect', resolve);
    created.once('error', reject);
  });
  return { client: created, inbox, sessionPresent: connack.sessionPresent };
}

/** Subscribes `subscriber` to `topic`, publishes one message with `publisher` and returns what arrived. */
async function roundTrip(subscriber: MqttClient, publisher: MqttClient, topic: string): Promise<Received> {
  const inbox = new Inbox<Received>();
  subscriber.on('message', (t, payload, packet) =>
    inbox.push({ topic: t, payload: payload.toString(), retain: packet.retain }),
  );
  await subscriber.subscribeAsync(topic, { qos: 1 });
  await publisher.publishAsync(topic, 'hello', { qos: 1 });
  return inbox.next(`a message on ${topic}`);
}

/**
 * The next `event` of a client. Unlike events.once this ignores 'error': while a broker restarts,
 * the failed reconnect attempts emit errors that are expected.
 */
function nextEvent(emitter: MqttClient, event: 'connect' | 'close'): Promise<void> {
  return new Promise((resolve) => emitter.once(event, () => resolve()));
}

const uniqueId = (prefix: string) => `${prefix}-${randomBytes(4).toString('hex')}`;

/** A persistent session is away while QoS 1 messages are published, then comes back for them. */
async function provesPersistentSession(
  url: string,
  between: () => Promise<void> = () => Promise.resolve(),
): Promise<void> {
  const session = { clientId: uniqueId('persist'), clean: false } as const;
  const first = await listeningClient(url, session);
  await first.client.subscribeAsync('persist/#', { qos: 1 });
  await first.client.endAsync();

  const publisher = await client(url);
  await publishMany(
    publisher,
    [1, 2, 3].map((n) => ({ topic: `persist/${n}`, payload: `m${n}`, qos: 1 as const })),
  );
  await between();

  const back = await listeningClient(url, session);
  expect(back.sessionPresent).toBe(true);
  const payloads = [];
  for (let n = 0; n < 3; n++) payloads.push((await back.inbox.next(`queued message ${n + 1}`)).payload);
  expect(payloads).toEqual(['m1', 'm2', 'm3']);
}

describe('aedes demo broker', () => {
  let broker: DemoBroker;
  beforeAll(async () => {
    broker = await startDemoBroker({ port: await getFreePort() });
  });
  afterAll(() => broker?.close());

  it('listens on loopback and routes a message from publisher to subscriber', async () => {
    expect(broker.url).toBe(`mqtt://127.0.0.1:${broker.port}`);
    const got = await roundTrip(await client(broker.url), await client(broker.url), 'demo/round-trip');
    expect(got).toEqual({ topic: 'demo/round-trip', payload: 'hello', retain: false });
  });

  it('delivers a retained message to a subscriber that arrives later', async () => {
    const publisher = await client(broker.url);
    await publisher.publishAsync('demo/retained', 'kept', { qos: 1, retain: true });
    const late = await listeningClient(broker.url, {});
    await late.client.subscribeAsync('demo/retained', { qos: 1 });
    expect(await late.inbox.next('the retained message')).toEqual({
      topic: 'demo/retained',
      payload: 'kept',
      retain: true,
    });
  });

  it('keeps QoS 1 messages for a persistent session (clean: false) while its client is away', async () => {
    await provesPersistentSession(broker.url);
  });
});

describe('demo broker lifecycle', () => {
  it('refuses a taken port with a clear error', async () => {
    const first = await startDemoBroker({ port: await getFreePort() });
    try {
      await expect(startDemoBroker({ port: first.port })).rejects.toThrow(
        new RegExp(`^Port ${first.port} on 127\\.0\\.0\\.1 is already in use`),
      );
    } finally {
      await first.close();
    }
  });

  it('close() ends the connected clients and frees the port', async () => {
    const broker = await startDemoBroker({ port: await getFreePort() });
    const connected = await client(broker.url, { reconnectPeriod: 0 });
    const closed = nextEvent(connected, 'close');
    await broker.close();
    await closed;
    // The port is free again: a new broker can take it at once.
    const again = await startDemoBroker({ port: broker.port });
    await again.close();
  });
});

describe('mosquitto', () => {
  let plain: RunningMosquitto;
  let secured: RunningMosquitto;
  const users = { bfg: 'right-password' };
  beforeAll(async () => {
    [plain, secured] = await Promise.all([startMosquitto(), startMosquitto({ users, tls: true })]);
  });
  afterAll(async () => {
    await plain?.stop();
    await secured?.stop();
  });

  it('routes a message from publisher to subscriber', async () => {
    expect(plain.url).toBe(`mqtt://127.0.0.1:${plain.port}`);
    const got = await roundTrip(await client(plain.url), await client(plain.url), 'mosq/round-trip');
    expect(got).toEqual({ topic: 'mosq/round-trip', payload: 'hello', retain: false });
  });

  it('with users: the right password connects; a wrong or missing one is refused by CONNACK', async () => {
    expect(secured.users).toEqual(users);
    await client(secured.url, { username: 'bfg', password: 'right-password' });
    // MQTT 3.1.1: Mosquitto answers CONNACK return code 5, "Not authorized".
    await expect(connectClient(secured.url, { username: 'bfg', password: 'wrong-password' })).rejects.toMatchObject({
      code: 5,
      message: 'Connection refused: Not authorized',
    });
    await expect(connectClient(secured.url)).rejects.toMatchObject({ code: 5 });
    // MQTT 5: Mosquitto 2.0 answers reason code 135 (0x87), "Not authorized", not 134.
    await expect(
      connectClient(secured.url, { protocolVersion: 5, username: 'bfg', password: 'wrong-password' }),
    ).rejects.toMatchObject({
      code: 135,
      message: 'Connection refused: Not authorized',
    });
  });

  it('TLS listener: trusted with the generated CA, refused without it', async () => {
    expect(secured.tlsUrl).toBe(`mqtts://127.0.0.1:${secured.tlsPort}`);
    expect(secured.caCert).toMatch(/^-----BEGIN CERTIFICATE-----/);
    const tlsUrl = secured.tlsUrl!;
    const credentials = { username: 'bfg', password: 'right-password' };
    const trusted = { ...credentials, ca: secured.caCert, rejectUnauthorized: true };
    const got = await roundTrip(await client(tlsUrl, trusted), await client(tlsUrl, trusted), 'mosq/tls');
    expect(got.payload).toBe('hello');
    await expect(connectClient(tlsUrl, { ...credentials, rejectUnauthorized: true })).rejects.toMatchObject({
      code: 'SELF_SIGNED_CERT_IN_CHAIN',
    });
  });

  it('restart(): a client with a short reconnect period reconnects and is subscribed again', async () => {
    const subscriber = await client(plain.url, { reconnectPeriod: 50 });
    await subscriber.subscribeAsync('mosq/after-restart', { qos: 1 });
    const inbox = new Inbox<string>();
    subscriber.on('message', (_topic, payload) => inbox.push(payload.toString()));
    const closed = nextEvent(subscriber, 'close');
    const reconnected = nextEvent(subscriber, 'connect');
    // After a reconnect with a clean session mqtt.js subscribes again by itself; its SUBACK is the
    // sign the broker routes to this client again (the first SUBACK was awaited above).
    const resubscribed = new Promise<void>((resolve) => {
      subscriber.on('packetreceive', (packet) => {
        if (packet.cmd === 'suback') resolve();
      });
    });

    await plain.restart();
    await closed;
    await reconnected;
    await resubscribed;
    const publisher = await client(plain.url);
    await publisher.publishAsync('mosq/after-restart', 'back', { qos: 1 });
    expect(await inbox.next('a message after the restart')).toBe('back');
  });
});

describe('mosquitto with persistence', () => {
  let broker: RunningMosquitto;
  beforeAll(async () => {
    broker = await startMosquitto({ persistence: true });
  });
  afterAll(() => broker?.stop());

  it('keeps a persistent session and its queued QoS 1 messages across restart()', async () => {
    await provesPersistentSession(broker.url, () => broker.restart());
  });
});
