import v8 from 'node:v8';
import vm from 'node:vm';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { BatchWriter } from '../../ingestor/src/batch-writer.ts';
import type { Db } from '../../ingestor/src/db.ts';
import { heldBytes, processMessage, type ProcessedMessage } from '../../ingestor/src/message-pipeline.ts';
import { defaultParserRegistry } from '../../ingestor/src/parsers/registry.ts';
import { TopicMatcher } from '../../ingestor/src/topic-matcher.ts';

/**
 * BFG_MAX_PENDING_BYTES bounds memory only as well as heldBytes estimates what a waiting message
 * takes. Measured here the way the ingestor holds messages — in the batch writer's queue, each with
 * an ack ticket and a done callback like a session's — by V8's heap before and after holding
 * thousands of each kind: small and large data messages, parsing failures, archived unmatched
 * messages. The estimate must stay within 25 % of the heap.
 */

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

const PATTERN = '+site/gateway/+gateway/datalogger/+datalogger/data';
const ctx = {
  connectionId: '1',
  siteId: '1',
  siteSlug: 's',
  matcher: new TopicMatcher([
    { id: '1', pattern: PATTERN, parser: 'bfg.datalogger-data.v1', parserConfig: {}, priority: 0 },
  ]),
};
const dataTopic = (i: number) => `s/gateway/gw-${i % 10}/datalogger/dl-${Math.floor(i / 10) % 10}/data`;
const json = (value: unknown) => Buffer.from(JSON.stringify(value));
const ts = (i: number) => new Date(Date.UTC(2026, 10, 1) + i * 1000).toISOString();

const KINDS: Record<string, (i: number) => { topic: string; payload: Buffer }> = {
  'data, 4 readings': (i) => ({
    topic: dataTopic(i),
    payload: json({
      ts: ts(i),
      readings: ['t_air', 'rh', 'p_atm', 'wind'].map((s, k) => ({ sensor: s, value: i + k / 10 })),
    }),
  }),
  'data, 50 values': (i) => ({
    topic: dataTopic(i),
    payload: json({
      ts: ts(i),
      values: Object.fromEntries(Array.from({ length: 50 }, (_, k) => [`s${k}`, i + k / 10])),
    }),
  }),
  'invalid JSON': (i) => ({ topic: dataTopic(i), payload: Buffer.from(`{"ts": ${i}, oops`) }),
  'schema failure': (i) => ({
    topic: dataTopic(i),
    payload: json({
      ts: 'x',
      readings: [
        { sensor: 'a', value: 'b' },
        { sensor: '!', value: i },
      ],
    }),
  }),
  'unmatched, archived': (i) => ({ topic: `other/thing/${i % 100}`, payload: Buffer.alloc(200, 120) }),
};

const COUNT = 10_000;

function measure(make: (i: number) => { topic: string; payload: Buffer }) {
  const inputs = Array.from({ length: COUNT }, (_, i) => make(i));
  // Never written (its first batch is due in weeks): the messages stay queued, as while Postgres is slow.
  const writer = new BatchWriter({} as Db, pino({ level: 'silent' }), {
    maxBatchMessages: Number.MAX_SAFE_INTEGER,
    maxWaitMs: 2_000_000_000,
    maxPending: Number.MAX_SAFE_INTEGER,
    maxRetryDelayMs: 100,
  });
  const acks: { messageId: number; state: string }[] = [];
  let estimated = 0;
  gc();
  gc();
  const before = process.memoryUsage();
  for (let i = 0; i < COUNT; i++) {
    const { topic, payload } = inputs[i]!;
    const message: ProcessedMessage = processMessage(
      ctx,
      { topic, payload, qos: 1, retained: false, receivedAt: new Date() },
      defaultParserRegistry,
      { maxPayloadBytes: 262_144, archiveUnmatched: true },
    );
    estimated += heldBytes(message);
    const ticket = { messageId: i, state: 'pending' };
    acks.push(ticket);
    writer.enqueue(message, undefined, (err) => {
      ticket.state = err ? 'failed' : 'committed';
    });
  }
  gc();
  gc();
  const after = process.memoryUsage();
  const measured = after.heapUsed + after.arrayBuffers - (before.heapUsed + before.arrayBuffers);
  expect(writer.pendingBytes).toBe(estimated);
  return { measured: measured / COUNT, estimated: estimated / COUNT, keep: [writer, acks, inputs] };
}

describe('heldBytes', () => {
  for (const [kind, make] of Object.entries(KINDS)) {
    it(`estimates what a held message takes: ${kind}`, () => {
      const { measured, estimated } = measure(make);
      console.log(`${kind}: ${measured.toFixed(0)} bytes held, ${estimated.toFixed(0)} estimated`);
      expect(estimated / measured).toBeGreaterThan(0.75);
      expect(estimated / measured).toBeLessThan(1.25);
    });
  }
});
