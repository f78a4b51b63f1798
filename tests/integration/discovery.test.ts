import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiscoveryAggregator } from '../../ingestor/src/discovery.ts';
import type { ProcessedMessage } from '../../ingestor/src/message-pipeline.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { newConnection, newSite } from '../support/factories.ts';
import { waitFor } from '../support/wait-for.ts';

/** Discovery stays bounded in memory with 100k+ distinct topics, and loses no count. */

let db: TestDatabase;
let connectionId: string;

beforeAll(async () => {
  db = await createTestDatabase();
  const site = await newSite(db.sql);
  connectionId = (await newConnection(db.sql, site.id)).id;
});
afterAll(async () => {
  await db.drop();
});

function message(topic: string): ProcessedMessage {
  return {
    connectionId,
    siteId: '0',
    topic,
    receivedAt: new Date(),
    excerpt: '{}',
    payloadBytes: 2,
    qos: 1,
    retained: false,
    matchedTopicId: null,
    isProcessable: false,
    rows: null,
    failure: null,
    archivePayload: null,
  };
}

describe('discovery aggregation', () => {
  it('holds at most 2× maxTopics of 120,000 distinct topics in memory, and writes every count', async () => {
    const maxTopics = 10_000;
    const discovery = new DiscoveryAggregator(db.sql, pino({ level: 'silent' }), { flushMs: 60_000, maxTopics });
    let peak = 0;
    for (let i = 0; i < 120_000; i++) {
      discovery.record(message(`fleet/device-${i}/data`));
      // A second message on an early topic: counts add up across flushes.
      if (i % 40_000 === 0) discovery.record(message('fleet/device-0/data'));
      peak = Math.max(peak, discovery.size);
      // What a broker session does before reading the next message.
      if (!discovery.hasRoom()) await discovery.waitForRoom();
    }
    await discovery.stop();
    expect(peak).toBeLessThanOrEqual(maxTopics * 2);
    expect(discovery.droppedTotal).toBe(0);
    const [row] = await db.sql<{ topics: number; messages: number }[]>`
      select count(*)::int as topics, sum(message_count)::int as messages from discovered_topic where connection_id = ${connectionId}`;
    expect(row).toEqual({ topics: 120_000, messages: 120_003 });
    await waitFor(
      'device-0 counted thrice',
      async () => {
        const [d] = await db.sql<
          { n: number }[]
        >`select message_count::int as n from discovered_topic where topic = 'fleet/device-0/data'`;
        return d?.n;
      },
      { accept: (n) => n === 4 },
    );
  });
});
