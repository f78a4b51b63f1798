import fc from 'fast-check';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { BatchWriter } from '../../ingestor/src/batch-writer.ts';
import { processMessage } from '../../ingestor/src/message-pipeline.ts';
import { defaultParserRegistry } from '../../ingestor/src/parsers/registry.ts';
import { TopicMatcher } from '../../ingestor/src/topic-matcher.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { newSite } from '../support/factories.ts';
import { startIngestor, waitForStatus, type RunningIngestor } from '../support/ingestor.ts';
import { startMosquitto, type RunningMosquitto } from '../support/mosquitto.ts';
import { connectClient } from '../support/mqtt-client.ts';
import { waitFor } from '../support/wait-for.ts';

/**
 * Property-based fuzz of the ingestor's input (issue 14): thousands of random and malformed
 * payloads and topics, interleaved with good messages, through a real Mosquitto into a running
 * ingestor. Whatever arrives: the ingestor keeps running, every good message is stored, every bad
 * one is counted in the parsing log (aggregated: identical errors share a row with a count), and
 * every message on a topic no pattern matches is archived. `npm run test:faults` runs it longer.
 */

const LONG = process.env['BFG_FAULTS'] === 'long';
const MAX_PAYLOAD_BYTES = 2_048;
const DATA_PATTERN = '+site/gateway/+gateway/datalogger/+datalogger/data';
const BASE_TS = Date.UTC(2026, 10, 1);

let db: TestDatabase;
let mosquitto: RunningMosquitto;
let run: RunningIngestor;
let publisher: MqttClient;

beforeAll(async () => {
  db = await createTestDatabase();
  mosquitto = await startMosquitto();
  run = await startIngestor(db.url, { BFG_MAX_PAYLOAD_BYTES: String(MAX_PAYLOAD_BYTES), BFG_BATCH_MAX_WAIT_MS: '20' });
  publisher = await connectClient(mosquitto.url);
});

afterAll(async () => {
  await publisher?.endAsync();
  await run?.stop();
  await mosquitto?.stop();
  await db?.drop();
});

/** What the broker lets through as a topic name (Mosquitto refuses the rest as malformed UTF-8). */
function brokerAccepts(topic: string): boolean {
  if (Buffer.byteLength(topic) > 65_535 || /[+#]/.test(topic)) return false;
  for (const ch of topic) {
    const c = ch.codePointAt(0)!;
    if (c <= 0x1f || (c >= 0x7f && c <= 0x9f) || (c >= 0xfdd0 && c <= 0xfdef) || (c & 0xfffe) === 0xfffe) return false;
  }
  return true;
}

type Fuzzed =
  | { kind: 'good'; gateway: string; datalogger: string; compact: boolean; values: (number | null)[] }
  | { kind: 'bad'; gateway: string; datalogger: string; payload: Buffer }
  | { kind: 'empty'; gateway: string; datalogger: string }
  | { kind: 'long-topic'; extra: number; payload: Buffer }
  | { kind: 'unmatched'; suffix: string; payload: Buffer };

const ident = fc.constantFrom('gw-1', 'gw-2', 'dl.A', 'x_9');
/** `json` as JSON text (a string raw: it is the payload's text already). */
const text = (json: unknown) => Buffer.from(typeof json === 'string' ? json : JSON.stringify(json));

/** Payloads the data parser must refuse, each for a reason of its own. */
const badPayload: fc.Arbitrary<Buffer> = fc.oneof(
  // Random bytes (most not UTF-8, the rest not JSON or not an object).
  fc.uint8Array({ minLength: 1, maxLength: 300 }).map((b) => Buffer.from(b)),
  // Any JSON value but the shape of a data message.
  fc
    .jsonValue({ maxDepth: 3 })
    .filter((v) => typeof v !== 'object' || v === null || Array.isArray(v) || !('readings' in v || 'values' in v))
    .map((v) => Buffer.from(JSON.stringify(v))),
  // JSON cut short or followed by garbage: never valid, whatever the middle.
  fc.string({ maxLength: 80 }).map((s) => text(`{"ts": ${s} ,,`)),
  // Well-formed, wrong content.
  fc
    .record({
      ts: fc.constantFrom('yesterday', '', '2026-13-45T00:00:00Z', true, { at: 1 }),
      readings: fc.constant([{ sensor: 's1', value: 1 }]),
    })
    .map(text),
  fc
    .record({ value: fc.oneof(fc.string(), fc.boolean(), fc.object({ maxDepth: 1 })) })
    .map(({ value }) => text({ ts: new Date(BASE_TS).toISOString(), readings: [{ sensor: 's1', value }] })),
  fc
    .string({ unit: 'grapheme', minLength: 1, maxLength: 70 })
    .filter((s) => !/^[A-Za-z0-9_.-]{1,64}$/.test(s))
    .map((sensor) => text({ ts: new Date(BASE_TS).toISOString(), readings: [{ sensor, value: 1 }] })),
  fc.constantFrom({ ts: 0, readings: 'all of them' }, { ts: 0, readings: [{}] }, { ts: 0 }).map(text),
  // More than a day in the future.
  fc.constant(
    text({ ts: new Date(Date.now() + 3 * 86_400_000).toISOString(), readings: [{ sensor: 's1', value: 1 }] }),
  ),
  // Too large: refused by its size before it is parsed.
  fc
    .integer({ min: MAX_PAYLOAD_BYTES + 1, max: MAX_PAYLOAD_BYTES * 3 })
    .map((n) => text({ ts: new Date(BASE_TS).toISOString(), readings: [], pad: 'x'.repeat(n) })),
  // Not UTF-8 at all.
  fc.constant(Buffer.from([0x7b, 0xff, 0xfe, 0x7d])),
);

const fuzzed: fc.Arbitrary<Fuzzed> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('good' as const),
      gateway: ident,
      datalogger: ident,
      compact: fc.boolean(),
      // Any double a sensor could report (near ±1.8e308 the rollups' sums would overflow, and the
      // database refuses such a message, as it should).
      values: fc.array(fc.oneof(fc.double({ noNaN: true, min: -1e15, max: 1e15 }), fc.constant(null)), {
        minLength: 1,
        maxLength: 3,
      }),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant('bad' as const), gateway: ident, datalogger: ident, payload: badPayload }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('empty' as const), gateway: ident, datalogger: ident }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('long-topic' as const),
      extra: fc.integer({ min: 1_030, max: 4_000 }),
      payload: fc.uint8Array({ minLength: 1, maxLength: 50 }).map((b) => Buffer.from(b)),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('unmatched' as const),
      suffix: fc
        .array(fc.string({ unit: 'grapheme', maxLength: 12 }), { minLength: 1, maxLength: 5 })
        .map((levels) => levels.join('/'))
        .filter((s) => brokerAccepts(s) && !/^gateway\/[^/]*\/datalogger\/[^/]*\/data$/.test(s)),
      payload: fc.uint8Array({ minLength: 1, maxLength: 200 }).map((b) => Buffer.from(b)),
    }),
  },
);

/** A site and connection of their own for each run, so its counts are its own. */
async function newConnection(): Promise<{ id: string; slug: string }> {
  const site = await newSite(db.sql);
  // Connection and pattern in one transaction: the ingestor's session starts with the pattern. (Made
  // one after the other, the session may subscribe first and archive the first messages as
  // unmatched until the pattern's NOTIFY reaches it — correct, but not what this test counts.)
  const id = await db.sql.begin(async (tx) => {
    const [conn] = await tx<{ id: string }[]>`
      insert into mqtt_connection (site_id, host, port, is_active) values (${site.id}, '127.0.0.1', ${mosquitto.port}, true)
      returning id::text as id`;
    await tx`insert into mqtt_topic (connection_id, pattern, parser) values (${conn!.id}, ${DATA_PATTERN}, 'bfg.datalogger-data.v1')`;
    return conn!.id;
  });
  await waitForStatus(db.sql, id, 'connected', { detail: /subscribed/ });
  return { id, slug: site.slug };
}

describe('fuzzed input', () => {
  let published = 0;
  it(
    'never stops the ingestor: good messages stored, bad ones counted in the parsing log, unmatched ones archived',
    async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(fuzzed, { minLength: 400, maxLength: LONG ? 2_000 : 800 }), async (messages) => {
          const { id, slug } = await newConnection();
          let readings = 0;
          let bad = 0;
          let archived = 0;
          for (const [i, m] of messages.entries()) {
            const data = (g: string, d: string) => `${slug}/gateway/${g}/datalogger/${d}/data`;
            let topic: string;
            let payload: Buffer;
            switch (m.kind) {
              case 'good': {
                // A distinct second per message: every reading is a row of its own.
                const ts = new Date(BASE_TS + i * 1000).toISOString();
                payload = m.compact
                  ? text({ ts, values: Object.fromEntries(m.values.map((v, k) => [`s${k}`, v])) })
                  : text({ ts, readings: m.values.map((value, k) => ({ sensor: `s${k}`, value })) });
                topic = data(m.gateway, m.datalogger);
                readings += m.values.length;
                break;
              }
              case 'bad':
                [topic, payload] = [data(m.gateway, m.datalogger), m.payload];
                bad += 1;
                break;
              case 'empty':
                [topic, payload] = [data(m.gateway, m.datalogger), Buffer.alloc(0)];
                break;
              case 'long-topic':
                [topic, payload] = [`${slug}/${'x'.repeat(m.extra)}`, m.payload];
                bad += 1;
                break;
              case 'unmatched':
                [topic, payload] = [`${slug}/${m.suffix}`, m.payload];
                archived += 1;
                break;
            }
            await publisher.publishAsync(topic, payload, { qos: 1 });
          }
          published += messages.length;
          const counts = async () => {
            const [row] = await db.sql<{ readings: number; failures: number; archived: number }[]>`
              select
                (select count(*)::int from sensor_reading r join sensor s on s.id = r.sensor_id
                 join mqtt_connection c on c.site_id = s.site_id where c.id = ${id}) as readings,
                (select coalesce(sum(count), 0)::int from mqtt_parsing_log where connection_id = ${id}) as failures,
                (select count(*)::int from mqtt_message_archive where connection_id = ${id}) as archived`;
            return row!;
          };
          const expected = { readings, failures: bad, archived };
          const seen = await waitFor(`${messages.length} fuzzed messages ingested`, counts, {
            accept: (c) => c.readings >= readings && c.failures >= bad && c.archived >= archived,
            timeoutMs: 30_000,
            intervalMs: 50,
          }).catch(async () => counts());
          const kinds = await db.sql<{ kind: string; rows: number; messages: number }[]>`
            select kind, count(*)::int as rows, sum(count)::int as messages
            from mqtt_parsing_log where connection_id = ${id} group by kind order by kind`;
          expect(seen, `parsing log: ${JSON.stringify(kinds)}`).toEqual(expected);
          // Aggregated: identical errors share a row (one per distinct error, not per message).
          const rows = kinds.reduce((n, k) => n + k.rows, 0);
          if (bad > 50) expect(rows).toBeLessThan(bad);
          expect(kinds.map((k) => k.kind)).not.toContain('processing');
        }),
        { numRuns: LONG ? 40 : 6, endOnFailure: true },
      );
      // Still running and connected after all of it.
      expect(run.ingestor.supervisor.observed().every((c) => c.status === 'connected')).toBe(true);
      console.info(`fuzz: ${published} messages published in ${LONG ? 40 : 6} runs; the ingestor kept going`);
    },
    LONG ? 600_000 : 120_000,
  );
});

describe('a message the database refuses', () => {
  it('costs only itself: the good messages of its batch are stored (found by the fuzz)', async () => {
    const site = await newSite(db.sql);
    const [conn] = await db.sql<{ id: string }[]>`
      insert into mqtt_connection (site_id, host) values (${site.id}, '127.0.0.1') returning id::text as id`;
    const [pattern] = await db.sql<{ id: string }[]>`
      insert into mqtt_topic (connection_id, pattern, parser) values (${conn!.id}, ${DATA_PATTERN}, 'bfg.datalogger-data.v1')
      returning id::text as id`;
    const context = {
      connectionId: conn!.id,
      siteId: site.id,
      siteSlug: site.slug,
      matcher: new TopicMatcher([
        { id: pattern!.id, pattern: DATA_PATTERN, parser: 'bfg.datalogger-data.v1', parserConfig: {}, priority: 0 },
      ]),
    };
    const message = (second: number, readings: { sensor: string; value: number }[]) =>
      processMessage(
        context,
        {
          topic: `${site.slug}/gateway/gw-1/datalogger/dl-1/data`,
          payload: text({ ts: new Date(BASE_TS + second * 1000).toISOString(), readings }),
          qos: 1,
          retained: false,
          receivedAt: new Date(),
        },
        defaultParserRegistry,
        { maxPayloadBytes: MAX_PAYLOAD_BYTES, archiveUnmatched: false },
      );
    const writer = new BatchWriter(db.sql, pino({ level: 'silent' }), {
      maxBatchMessages: 100,
      maxWaitMs: 1_000,
      maxPending: 1_000,
      maxRetryDelayMs: 100,
    });
    // A five-minute rollup near the largest double: one more such reading overflows its sum.
    await Promise.all([writer.submit(message(0, [{ sensor: 'huge', value: 1.7e308 }])), writer.flush()]);
    // One batch: a good message creating a sensor, and one the database refuses (the overflow).
    const good = writer.submit(message(1, [{ sensor: 'new', value: 1 }]));
    const refused = writer.submit(message(2, [{ sensor: 'huge', value: 1.7e308 }]));
    await writer.flush();
    await Promise.all([good, refused]);
    // And the sensor the failed batch had created, written again.
    await Promise.all([writer.submit(message(3, [{ sensor: 'new', value: 2 }])), writer.flush()]);
    await writer.close(1_000);
    const stored = await db.sql<{ ident: string; n: number }[]>`
      select s.ident, count(*)::int as n from sensor_reading r join sensor s on s.id = r.sensor_id
      where s.site_id = ${site.id} group by s.ident order by s.ident`;
    expect(stored).toEqual([
      { ident: 'huge', n: 1 },
      { ident: 'new', n: 2 },
    ]);
    const [log] = await db.sql<{ kind: string; count: number }[]>`
      select kind, count::int from mqtt_parsing_log where connection_id = ${conn!.id}`;
    expect(log).toEqual({ kind: 'processing', count: 1 });
  });
});
