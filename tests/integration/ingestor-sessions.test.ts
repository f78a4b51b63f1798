import { randomBytes } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BrokerSubscriptions } from '../../ingestor/src/broker-subscriptions.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { newSite } from '../support/factories.ts';
import { startIngestor, waitForStatus, type RunningIngestor } from '../support/ingestor.ts';
import { startMosquitto, type RunningMosquitto } from '../support/mosquitto.ts';
import { connectClient, publishMany } from '../support/mqtt-client.ts';
import { waitFor } from '../support/wait-for.ts';

/**
 * The broker session's subscriptions always equal mqtt_connection.subscribe_filters — with the
 * broker keeping the session (clean_start = false, the default) across filter edits, reconnects,
 * broker restarts and ingestor restarts. Real Mosquitto with persistence, official MQTT.js client.
 */

let db: TestDatabase;
let mosquitto: RunningMosquitto;
let publisher: MqttClient;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  // Subscriptions to forbidden/# are refused (SUBACK 0x80, or 0x87 with MQTT 5).
  mosquitto = await startMosquitto({ persistence: true, refuseSubscriptions: ['forbidden/#'] });
  publisher = await connectClient(mosquitto.url, { protocolVersion: 5, reconnectPeriod: 100 });
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
});

afterAll(async () => {
  await publisher?.endAsync();
  await mosquitto?.stop();
  await db?.drop();
});

async function ingestor(): Promise<RunningIngestor> {
  const run = await startIngestor(db.url);
  let stopped = false;
  cleanups.push(() => (stopped ? Promise.resolve() : run.stop()));
  return {
    ...run,
    async stop() {
      stopped = true;
      await run.stop();
    },
  };
}

/** An active connection (persistent session) subscribing `filters` (relative to a fresh site's slug). */
async function connection(filters: (slug: string) => string[], fields: { protocolVersion?: 4 | 5 } = {}) {
  const site = await newSite(db.sql);
  const [row] = await db.sql<{ id: string }[]>`
    insert into mqtt_connection (site_id, host, port, protocol_version, subscribe_filters, is_active)
    values (${site.id}, '127.0.0.1', ${mosquitto.port}, ${fields.protocolVersion ?? 5}, ${filters(site.slug)}::text[], true)
    returning id::text as id`;
  // Deactivated after the test, so that the next test's ingestor leaves it alone.
  cleanups.push(() => db.sql`update mqtt_connection set is_active = false where id = ${row!.id}`);
  return { id: row!.id, slug: site.slug };
}

interface LogRow {
  id: number;
  event: string;
  level: string;
  detail: string;
}

const logSince = (id: string, after: number) => db.sql<LogRow[]>`
  select id::int as id, event, level, detail from mqtt_connection_log where connection_id = ${id} and id > ${after} order by id`;
const lastLogId = async (id: string) =>
  (
    await db.sql<
      { n: number }[]
    >`select coalesce(max(id), 0)::int as n from mqtt_connection_log where connection_id = ${id}`
  )[0]!.n;

/** Waits for a 'subscribe' row after `after` whose detail matches every pattern. */
async function waitForSubscribeLog(id: string, after: number, ...patterns: RegExp[]): Promise<LogRow> {
  const row = await waitFor(`a subscribe log row matching ${patterns.map(String).join(' and ')}`, async () => {
    const rows = await logSince(id, after);
    return rows.find((r) => r.event === 'subscribe' && patterns.every((p) => p.test(r.detail)));
  });
  return row!;
}

const sessionFilters = async (id: string) =>
  (await db.sql<{ filters: string[] }[]>`select session_filters as filters from mqtt_connection where id = ${id}`)[0]!
    .filters;

const discoveredCount = async (id: string, topic: string) =>
  (
    await db.sql<
      { n: number }[]
    >`select message_count::int as n from discovered_topic where connection_id = ${id} and topic = ${topic}`
  )[0]?.n ?? 0;

/**
 * Publishes on every `silent` topic, then on `heard` (in that order, QoS 1, one publisher), and
 * waits until `heard` is discovered. A message on a silent topic would have arrived first, so by
 * then it would be discovered too: their count says whether the session still delivers them.
 */
async function expectDelivery(id: string, heard: string, silent: string[]): Promise<void> {
  const tag = randomBytes(3).toString('hex');
  const before = await discoveredCount(id, heard);
  await publishMany(
    publisher,
    [...silent, heard].map((topic) => ({ topic, payload: `{"tag":"${tag}"}`, qos: 1 as const })),
  );
  await waitFor(`${heard} to be discovered`, () => discoveredCount(id, heard), { accept: (n) => n > before });
  for (const topic of silent) expect(await discoveredCount(id, topic), `messages discovered on ${topic}`).toBe(0);
}

describe('subscriptions follow subscribe_filters', () => {
  it('on a live client: a changed filter is subscribed, the removed one unsubscribed, no reconnect; a broker restart keeps it so', async () => {
    const run = await ingestor();
    const { id, slug } = await connection((s) => [`${s}/a/#`]);
    await waitForStatus(db.sql, id, 'connected', { detail: /subscribed to/ });
    const session = run.ingestor.supervisor.session(id);
    expect(await sessionFilters(id)).toEqual([`${slug}/a/#`]);

    let mark = await lastLogId(id);
    await db.sql`update mqtt_connection set subscribe_filters = ${[`${slug}/b/#`]}::text[] where id = ${id}`;
    const changed = await waitForSubscribeLog(
      id,
      mark,
      new RegExp(`subscribed to ${slug}/b/#`),
      new RegExp(`unsubscribed from ${slug}/a/#`),
    );
    expect(changed.level).toBe('info');
    expect(run.ingestor.supervisor.session(id)).toBe(session);
    expect((await logSince(id, mark)).map((r) => r.event)).toEqual(['subscribe']);
    expect(await sessionFilters(id)).toEqual([`${slug}/b/#`]);
    await expectDelivery(id, `${slug}/b/1`, [`${slug}/a/1`]);

    // The share group too is changed in place; the $share/<group>/ prefix is what the broker holds.
    mark = await lastLogId(id);
    await db.sql`update mqtt_connection set share_group = 'g1' where id = ${id}`;
    await waitForSubscribeLog(
      id,
      mark,
      new RegExp(`subscribed to \\$share/g1/${slug}/b/#`),
      new RegExp(`unsubscribed from ${slug}/b/#`),
    );
    expect(run.ingestor.supervisor.session(id)).toBe(session);
    expect(await sessionFilters(id)).toEqual([`$share/g1/${slug}/b/#`]);
    await expectDelivery(id, `${slug}/b/2`, [`${slug}/a/2`]);

    // The broker keeps the corrected session across its restart (persistence): the reconnect finds
    // it and has nothing to change, and the old filter stays unsubscribed. (Mosquitto 2.0.11 loses
    // the shared subscription itself on that restart; the renewal on every connect restores it.)
    mark = await lastLogId(id);
    await mosquitto.restart();
    const reconnected = await waitFor('the reconnect', async () =>
      (await logSince(id, mark)).find((r) => r.event === 'reconnect' && r.detail.startsWith('connected')),
    );
    expect(reconnected!.detail).toBe('connected; the broker kept our session');
    await expectDelivery(id, `${slug}/b/3`, [`${slug}/a/3`]);
    expect((await logSince(id, mark)).filter((r) => r.event === 'subscribe')).toEqual([]);
  });

  it('filters changed while the broker is down are applied on the reconnect that finds the session kept', async () => {
    const run = await ingestor();
    const { id, slug } = await connection((s) => [`${s}/a/#`]);
    await waitForStatus(db.sql, id, 'connected', { detail: /subscribed to/ });
    const mark = await lastLogId(id);
    await mosquitto.restart(async () => {
      await db.sql`update mqtt_connection set subscribe_filters = ${[`${slug}/c/#`]}::text[] where id = ${id}`;
      await waitFor('the session to follow the new row', () =>
        run.ingestor.supervisor.session(id)?.row.subscribeFilters.includes(`${slug}/c/#`),
      );
    });
    await waitForSubscribeLog(
      id,
      mark,
      new RegExp(`subscribed to ${slug}/c/#`),
      new RegExp(`unsubscribed from ${slug}/a/#`),
    );
    const events = (await logSince(id, mark)).map((r) => [r.event, r.detail]);
    expect(events).toContainEqual(['reconnect', 'connected; the broker kept our session']);
    expect(await sessionFilters(id)).toEqual([`${slug}/c/#`]);
    await expectDelivery(id, `${slug}/c/1`, [`${slug}/a/1`]);
  });

  it('after an ingestor restart, the kept session is corrected from session_filters, without replaying retained messages', async () => {
    const { id, slug } = await connection((s) => [`${s}/keep/#`, `${s}/a/#`]);
    const retained = `${slug}/keep/state`;
    await publisher.publishAsync(retained, '{"state":"kept"}', { qos: 1, retain: true });
    const first = await ingestor();
    await waitForStatus(db.sql, id, 'connected', { detail: /subscribed to/ });
    await waitFor('the retained message', () => discoveredCount(id, retained), { accept: (n) => n === 1 });
    await first.stop();

    // While no ingestor runs: the filters change, and the broker restarts (its session persists).
    await db.sql`update mqtt_connection set subscribe_filters = ${[`${slug}/keep/#`, `${slug}/b/#`]}::text[] where id = ${id}`;
    await mosquitto.restart();

    const mark = await lastLogId(id);
    await ingestor();
    const synced = await waitForSubscribeLog(
      id,
      mark,
      new RegExp(`subscribed to ${slug}/b/#`),
      new RegExp(`unsubscribed from ${slug}/a/#`),
    );
    expect((await logSince(id, mark)).map((r) => r.detail)).toContain('connected; the broker kept our session');
    // The filter kept is subscribed again (this process cannot know that the broker has it), with
    // MQTT 5 retain handling 1: its retained message is not sent a second time.
    expect(synced.detail).toContain(`renewed ${slug}/keep/#`);
    expect((await sessionFilters(id)).sort()).toEqual([`${slug}/b/#`, `${slug}/keep/#`]);
    await expectDelivery(id, `${slug}/b/1`, [`${slug}/a/1`]);
    expect(await discoveredCount(id, retained)).toBe(1);
  });

  it.each([
    [4, /the broker refused forbidden\/[a-z0-9-]+\/# \(0x80 Unspecified error\)/],
    [5, /the broker refused forbidden\/[a-z0-9-]+\/# \(0x87 Not authorized\)/],
  ] as const)(
    "MQTT %i: a refused filter is logged with the broker's reason and not recorded as held",
    async (version, refusal) => {
      await ingestor();
      const { id, slug } = await connection((s) => [`forbidden/${s}/#`, `${s}/ok/#`], { protocolVersion: version });
      const row = await waitForSubscribeLog(id, 0, refusal, new RegExp(`subscribed to ${slug}/ok/#`));
      expect(row.level).toBe('warn');
      expect(await sessionFilters(id)).toEqual([`${slug}/ok/#`]);
      await waitForStatus(db.sql, id, 'connected', { detail: refusal });
    },
  );
});

describe('BrokerSubscriptions', () => {
  it('records a filter before its SUBSCRIBE goes out, and forgets one only after its UNSUBACK', async () => {
    const clientId = `bfg-test-${randomBytes(4).toString('hex')}`;
    const client = await connectClient(mosquitto.url, {
      clientId,
      clean: false,
      protocolVersion: 5,
      properties: { sessionExpiryInterval: 60 },
    });
    cleanups.push(() => client.endAsync(true));
    const records: string[][] = [];
    const subscriptions = new BrokerSubscriptions(['old/#'], (filters) => {
      records.push(filters);
      return Promise.resolve();
    });
    // What the database said whenever a packet went out.
    const onTheWire: [string, string[] | undefined][] = [];
    client.on('packetsend', (packet) => {
      if (packet.cmd === 'subscribe' || packet.cmd === 'unsubscribe') onTheWire.push([packet.cmd, records.at(-1)]);
    });

    subscriptions.connected(true, 5);
    const change = await subscriptions.sync(client, ['new/#'], 5);
    expect(change).toEqual({
      subscribed: ['new/#'],
      renewed: [],
      unsubscribed: ['old/#'],
      refused: [],
      keptByBroker: [],
    });
    // A crash at any point leaves a record that includes whatever the broker may hold.
    expect(onTheWire).toEqual([
      ['subscribe', ['new/#', 'old/#']],
      ['unsubscribe', ['new/#', 'old/#']],
    ]);
    expect(records).toEqual([['new/#', 'old/#'], ['new/#']]);
    expect(subscriptions.needsSync(['new/#'])).toBe(false);
  });

  it('forgets the recorded filters, without an UNSUBSCRIBE, when the broker has no session for us', async () => {
    const client = await connectClient(mosquitto.url, { protocolVersion: 5 });
    cleanups.push(() => client.endAsync(true));
    const records: string[][] = [];
    const subscriptions = new BrokerSubscriptions(['old/#', 'kept/#'], (filters) => {
      records.push(filters);
      return Promise.resolve();
    });
    const sent: string[] = [];
    client.on('packetsend', (packet) => sent.push(packet.cmd));

    subscriptions.connected(false, 5);
    const change = await subscriptions.sync(client, ['kept/#'], 5);
    expect(change).toEqual({ subscribed: ['kept/#'], renewed: [], unsubscribed: [], refused: [], keptByBroker: [] });
    expect(sent.filter((cmd) => cmd.endsWith('subscribe'))).toEqual(['subscribe']);
    expect(records).toEqual([['kept/#']]);
  });
});
