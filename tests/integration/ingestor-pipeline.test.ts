import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getFreePort, startDemoBroker } from '@bfg/local';
import { badPayloads } from '../../ingestor/src/simulator/bad-payloads.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { newSite } from '../support/factories.ts';
import { startIngestor, waitForStatus, type RunningIngestor } from '../support/ingestor.ts';
import { connectClient } from '../support/mqtt-client.ts';
import { waitFor } from '../support/wait-for.ts';

/**
 * The message pipeline end to end: real broker → ingestor → Postgres. Every bad-input row of
 * PAYLOADS.md, interleaved with good messages: every good message is stored, every bad one ends
 * in the parsing log, and the stream never stops.
 */

let db: TestDatabase;
let run: RunningIngestor;
let broker: Awaited<ReturnType<typeof startDemoBroker>>;
let publisher: MqttClient;
let connectionId: string;
let slug: string;

const PATTERNS = [
  ['+site/gateway/+gateway/status', 'bfg.gateway-status.v1'],
  ['+site/gateway/+gateway/datalogger/+datalogger/info', 'bfg.datalogger-info.v1'],
  ['+site/gateway/+gateway/datalogger/+datalogger/data', 'bfg.datalogger-data.v1'],
] as const;

beforeAll(async () => {
  db = await createTestDatabase();
  broker = await startDemoBroker({ port: await getFreePort() });
  const site = await newSite(db.sql);
  slug = site.slug;
  const [conn] = await db.sql<{ id: string }[]>`
    insert into mqtt_connection (site_id, host, port, protocol_version, subscribe_filters, is_active)
    values (${site.id}, '127.0.0.1', ${broker.port}, 4, '{#}', true) returning id::text as id`;
  connectionId = conn!.id;
  for (const [pattern, parser] of PATTERNS) {
    await db.sql`insert into mqtt_topic (connection_id, pattern, parser) values (${connectionId}, ${pattern}, ${parser})`;
  }
  run = await startIngestor(db.url);
  await waitForStatus(db.sql, connectionId, 'connected', { detail: /subscribed/ });
  publisher = await connectClient(broker.url);
});

afterAll(async () => {
  await publisher?.endAsync();
  await run?.stop();
  await broker?.close();
  await db?.drop();
});

const count = async (query: Promise<{ n: number }[]>) => (await query)[0]!.n;

describe('message pipeline', () => {
  it('stores every good message and logs every bad one, interleaved', async () => {
    const dataTopic = (gw: string, dl: string) => `${slug}/gateway/${gw}/datalogger/${dl}/data`;
    await publisher.publishAsync(
      `${slug}/gateway/gw-1/status`,
      JSON.stringify({ online: true, firmware: '2.4.1', rssi_dbm: -67 }),
      { qos: 1, retain: true },
    );
    await publisher.publishAsync(
      `${slug}/gateway/gw-1/datalogger/dl-1/info`,
      JSON.stringify({
        model: 'DL-400',
        serial: 'DL4-1',
        interval_s: 60,
        sensors: [
          { id: 't_air', name: 'Air temperature', kind: 'temperature', unit: '°C' },
          { id: 'rh', kind: 'humidity', unit: '%' },
        ],
      }),
      { qos: 1, retain: true },
    );

    const base = Date.parse('2026-11-26T10:00:00Z');
    let good = 0;
    for (let i = 0; i < 200; i++) {
      const ts = new Date(base + i * 1000).toISOString();
      const payload =
        i % 2 === 0
          ? {
              ts,
              seq: i,
              readings: [
                { sensor: 't_air', value: 20 + i / 100 },
                { sensor: 'rh', value: null, quality: 'bad' },
              ],
            }
          : { ts: Math.floor((base + i * 1000) / 1000), values: { t_air: 20 + i / 100, rh: 50 } };
      await publisher.publishAsync(dataTopic('gw-1', i % 4 === 0 ? 'dl-2' : 'dl-1'), JSON.stringify(payload), {
        qos: 1,
      });
      good += 1;
      const bad = badPayloads[i % badPayloads.length]!(dataTopic('gw-1', 'dl-1'), slug);
      await publisher.publishAsync(bad.topic, bad.payload, { qos: 1 });
    }
    // The same message delivered twice is stored once.
    const duplicate = JSON.stringify({ ts: new Date(base).toISOString(), readings: [{ sensor: 't_air', value: 20 }] });
    await publisher.publishAsync(dataTopic('gw-1', 'dl-2'), duplicate, { qos: 1 });

    await waitFor('all 400 readings', () => count(db.sql`select count(*)::int as n from sensor_reading`), {
      accept: (n) => n >= 2 * good,
    });
    expect(await count(db.sql`select count(*)::int as n from sensor_reading`)).toBe(2 * good);

    // NULL values (sensor faults), qualities and absent qualities are stored as sent.
    const qualities = await db.sql<{ quality: string | null; nulls: number; n: number }[]>`
      select quality, count(*) filter (where value is null)::int as nulls, count(*)::int as n
      from sensor_reading group by quality order by quality nulls last`;
    expect(qualities).toEqual([
      { quality: 'bad', nulls: 100, n: 100 },
      { quality: null, nulls: 0, n: 2 * good - 100 },
    ]);
    const [gateway] = await db.sql`select online, firmware, rssi_dbm from gateway where ident = 'gw-1'`;
    expect(gateway).toEqual({ online: true, firmware: '2.4.1', rssi_dbm: -67 });
    const sensors = await db.sql<{ ident: string; kind: string | null; unit: string | null; dl: string }[]>`
      select s.ident, s.kind, s.unit, d.ident as dl from sensor s join datalogger d on d.id = s.datalogger_id order by d.ident, s.ident`;
    expect(sensors).toEqual([
      { ident: 'rh', kind: 'humidity', unit: '%', dl: 'dl-1' },
      { ident: 't_air', kind: 'temperature', unit: '°C', dl: 'dl-1' },
      { ident: 'rh', kind: null, unit: null, dl: 'dl-2' },
      { ident: 't_air', kind: null, unit: null, dl: 'dl-2' },
    ]);
    const [latest] = await db.sql<{ value: number; at: Date }[]>`
      select s.last_value as value, s.last_value_at as at from sensor s join datalogger d on d.id = s.datalogger_id
      where d.ident = 'dl-1' and s.ident = 't_air'`;
    expect(latest!.at.toISOString()).toBe(new Date(base + 199 * 1000).toISOString());
    expect(latest!.value).toBeCloseTo(21.99);

    await waitFor(
      'the parsing log to hold every kind',
      async () => {
        const kinds = await db.sql<{ kind: string }[]>`select distinct kind from mqtt_parsing_log order by kind`;
        return kinds.map((k) => k.kind).join(',');
      },
      { accept: (kinds) => kinds === 'invalid_json,invalid_topic,schema,too_large' },
    );
    const byKind = await db.sql<{ kind: string; n: number }[]>`
      select kind, sum(count)::int as n from mqtt_parsing_log group by kind order by kind`;
    // 200 bad messages cycling through the 17 kinds of PAYLOADS.md's table (12 or 11 of each).
    const expected = { invalid_json: 24, invalid_topic: 33, schema: 119, too_large: 24 };
    expect(Object.fromEntries(byKind.map((k) => [k.kind, k.n]))).toEqual(expected);
    const issues = await db.sql<{ paths: string[] }[]>`
      select issue_paths as paths from mqtt_parsing_log where kind = 'schema' and 'readings.0.value' = any(issue_paths)`;
    expect(issues.length).toBeGreaterThanOrEqual(1);

    await waitFor(
      'discovery to count every message of the data topic',
      async () => {
        const [row] = await db.sql<{ n: number; processable: boolean }[]>`
        select message_count::int as n, is_processable as processable from discovered_topic where topic = ${dataTopic('gw-1', 'dl-1')}`;
        return row;
      },
      { accept: (row) => row !== undefined && row.n >= 150 && row.processable },
    );
    const [long] = await db.sql<
      { length: number }[]
    >`select length(topic) as length from discovered_topic order by length(topic) desc limit 1`;
    expect(long!.length).toBe(1024);
  });

  it('aggregates a burst of 10,000 invalid messages into one row with a count, and keeps flowing', async () => {
    const topic = `${slug}/gateway/gw-9/datalogger/dl-1/data`;
    const before = await count(db.sql`select count(*)::int as n from sensor_reading`);
    for (let sent = 0; sent < 10_000; sent += 500) {
      await Promise.all(
        Array.from({ length: 500 }, () => publisher.publishAsync(topic, '{"ts": 1, "readings": "nope"}', { qos: 0 })),
      );
    }
    await publisher.publishAsync(topic, JSON.stringify({ ts: new Date().toISOString(), values: { t_air: 1 } }), {
      qos: 1,
    });
    await waitFor(
      'the good message after the burst',
      () => count(db.sql`select count(*)::int as n from sensor_reading`),
      { accept: (n) => n === before + 1 },
    );
    const rows = await db.sql<{ count: number }[]>`select count::int from mqtt_parsing_log where topic = ${topic}`;
    expect(rows).toHaveLength(1);
    expect(rows[0]!.count).toBe(10_000);
  });
});
