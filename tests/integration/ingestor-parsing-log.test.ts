import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TOPICS_PER_LOG_ROW } from '../../ingestor/src/sql/write-logs.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { newSite } from '../support/factories.ts';
import { startIngestor, waitForStatus, type RunningIngestor } from '../support/ingestor.ts';
import { startMosquitto, type RunningMosquitto } from '../support/mosquitto.ts';
import { connectClient, publishMany } from '../support/mqtt-client.ts';
import { waitFor } from '../support/wait-for.ts';

/**
 * What the parsing log and discovery record of messages that are not readings, against a real
 * Mosquitto and the official MQTT.js client: an empty message (a retained clear) is no error, and
 * an aggregated error row still says which topics failed.
 */

let db: TestDatabase;
let mosquitto: RunningMosquitto;
let run: RunningIngestor;
let publisher: MqttClient;
let connectionId: string;
let slug: string;

const dataTopic = (gateway: string) => `${slug}/gateway/${gateway}/datalogger/dl-1/data`;
/** Fails the data parser's schema the same way whatever the topic: one parsing-log row per pattern. */
const BAD = '{"ts": 1, "readings": "nope"}';

beforeAll(async () => {
  db = await createTestDatabase();
  mosquitto = await startMosquitto();
  const site = await newSite(db.sql);
  slug = site.slug;
  const [conn] = await db.sql<{ id: string }[]>`
    insert into mqtt_connection (site_id, host, port, is_active) values (${site.id}, '127.0.0.1', ${mosquitto.port}, true)
    returning id::text as id`;
  connectionId = conn!.id;
  await db.sql`insert into mqtt_topic (connection_id, pattern, parser)
               values (${connectionId}, '+site/gateway/+gateway/datalogger/+datalogger/data', 'bfg.datalogger-data.v1')`;
  run = await startIngestor(db.url);
  await waitForStatus(db.sql, connectionId, 'connected', { detail: /subscribed/ });
  publisher = await connectClient(mosquitto.url, { protocolVersion: 5 });
});

afterAll(async () => {
  await publisher?.endAsync();
  await run?.stop();
  await mosquitto?.stop();
  await db?.drop();
});

interface LogRow {
  id: string;
  kind: string;
  topic: string;
  count: number;
  topicCount: number;
  untrackedCount: number;
}

const logRows = () => db.sql<LogRow[]>`
  select id::text as id, kind, topic, count::int as count, topic_count as "topicCount", untracked_count::int as "untrackedCount"
  from mqtt_parsing_log where connection_id = ${connectionId} order by id`;

describe('empty messages', () => {
  it('a retained clear (zero-length payload) is discovered and counted, but is no parsing error and no archive row', async () => {
    const topic = dataTopic('gw-empty');
    const unmatched = `${slug}/elsewhere/empty`;
    await publishMany(publisher, [
      {
        topic,
        payload: JSON.stringify({ ts: '2026-11-30T10:00:00Z', readings: [{ sensor: 't', value: 1 }] }),
        qos: 1,
        retain: true,
      },
      // Clears the retained message: the broker passes it on to us (already subscribed) with retain = 0.
      { topic, payload: '', qos: 1, retain: true },
      { topic: unmatched, payload: '', qos: 1 },
      // A real failure after them: once its row is committed, so are the batches before it.
      { topic: dataTopic('gw-sentinel'), payload: 'not json', qos: 1 },
    ]);
    await waitFor("the sentinel's parsing-log row", logRows, {
      accept: (rows) => rows.some((r) => r.topic === dataTopic('gw-sentinel')),
    });
    expect((await logRows()).map((r) => [r.kind, r.topic])).toEqual([['invalid_json', dataTopic('gw-sentinel')]]);

    const discovered = await waitFor(
      'both topics discovered with every message',
      () => db.sql<
        {
          topic: string;
          messageCount: number;
          lastPayloadBytes: number;
          lastRetained: boolean;
          lastError: string | null;
          isProcessable: boolean;
        }[]
      >`
      select topic, message_count::int as "messageCount", last_payload_bytes as "lastPayloadBytes", last_retained as "lastRetained",
             last_error as "lastError", is_processable as "isProcessable"
      from discovered_topic where connection_id = ${connectionId} and topic in (${topic}, ${unmatched}) order by topic`,
      { accept: (rows) => rows.length === 2 && rows.every((r) => r.lastPayloadBytes === 0) },
    );
    expect(discovered).toEqual([
      {
        topic: unmatched,
        messageCount: 1,
        lastPayloadBytes: 0,
        lastRetained: false,
        lastError: null,
        isProcessable: false,
      },
      { topic, messageCount: 2, lastPayloadBytes: 0, lastRetained: false, lastError: null, isProcessable: true },
    ]);
    const [archived] = await db.sql<
      { n: number }[]
    >`select count(*)::int as n from mqtt_message_archive where topic = ${unmatched}`;
    expect(archived!.n).toBe(0);
    const [stored] = await db.sql<{ n: number }[]>`select count(*)::int as n from sensor_reading`;
    expect(stored!.n).toBe(1);
  });
});

describe('parsing log topics', () => {
  const topicsOf = (logId: string) => db.sql<{ topic: string; count: number }[]>`
    select topic, count::int as count from mqtt_parsing_log_topic where parsing_log_id = ${logId} order by topic`;
  const patternRow = async () => (await logRows()).find((r) => r.kind === 'schema');

  it('one row per error of a pattern, listing the topics that failed with their counts, at most a bounded number', async () => {
    const round1 = [
      ['gw-1', 3],
      ['gw-2', 2],
      ['gw-3', 1],
    ] as const;
    await publishMany(
      publisher,
      round1.flatMap(([gw, n]) =>
        Array.from({ length: n }, () => ({ topic: dataTopic(gw), payload: BAD, qos: 1 as const })),
      ),
    );
    const first = await waitFor('the six failures logged', patternRow, { accept: (row) => row?.count === 6 });
    expect(first).toMatchObject({ topic: dataTopic('gw-3'), topicCount: 3, untrackedCount: 0 });
    expect(await topicsOf(first!.id)).toEqual([
      { topic: dataTopic('gw-1'), count: 3 },
      { topic: dataTopic('gw-2'), count: 2 },
      { topic: dataTopic('gw-3'), count: 1 },
    ]);

    // A known topic again, and more new topics than the row has places left for.
    const fresh = Array.from({ length: TOPICS_PER_LOG_ROW }, (_, i) => `gw-${100 + i}`);
    await publishMany(
      publisher,
      ['gw-1', ...fresh].map((gw) => ({ topic: dataTopic(gw), payload: BAD, qos: 1 as const })),
    );
    const total = 6 + 1 + fresh.length;
    const second = await waitFor('every failure logged', patternRow, { accept: (row) => row?.count === total });
    const listed = await topicsOf(second!.id);
    expect(listed).toHaveLength(TOPICS_PER_LOG_ROW);
    expect(second).toMatchObject({
      id: first!.id,
      topicCount: TOPICS_PER_LOG_ROW,
      untrackedCount: 3 + fresh.length - TOPICS_PER_LOG_ROW,
    });
    expect(listed.find((t) => t.topic === dataTopic('gw-1'))?.count).toBe(4);
    // Every message is accounted for: on a listed topic or in untracked_count.
    expect(listed.reduce((sum, t) => sum + t.count, 0) + second!.untrackedCount).toBe(total);
  });
});
