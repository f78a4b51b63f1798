import type { Db } from './db.ts';
import { coerceError } from './errors.ts';
import type { Logger } from './logger.ts';
import type { ProcessedMessage } from './message-pipeline.ts';
import { upsertDiscoveredTopics, type DiscoveredTopicUpsert } from './sql/upsert-discovered-topics.ts';

/**
 * Aggregates every message's topic in memory (count, first/last seen, last payload excerpt, the
 * pattern that matched) and writes the aggregates in one statement per flush, so discovery costs
 * one row write per topic per flush instead of one per message.
 *
 * Memory is bounded: past `maxTopics` distinct topics a flush starts early; if the database is away
 * and the map reaches 4× that, new topics are counted as dropped until a flush succeeds (topics
 * already in the map keep being updated).
 */
export class DiscoveryAggregator {
  private entries = new Map<string, DiscoveredTopicUpsert>();
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  dropped = 0;

  private readonly sql: Db;
  private readonly logger: Logger;
  private readonly options: { flushMs: number; maxTopics: number };

  constructor(sql: Db, logger: Logger, options: { flushMs: number; maxTopics: number }) {
    this.sql = sql;
    this.logger = logger;
    this.options = options;
  }

  start(): void {
    this.timer = setInterval(() => void this.flush(), this.options.flushMs);
    this.timer.unref();
  }

  record(m: ProcessedMessage): void {
    const key = `${m.connectionId}\u0000${m.topic}`;
    const entry = this.entries.get(key);
    const lastError = m.failure ? `${m.failure.kind}: ${m.failure.message}`.slice(0, 1000) : null;
    if (entry) {
      entry.messageCount += 1;
      entry.lastSeenAt = m.receivedAt;
      entry.lastPayload = m.excerpt;
      entry.lastPayloadBytes = m.payloadBytes;
      entry.lastQos = m.qos;
      entry.lastRetained = m.retained;
      entry.isProcessable = m.isProcessable;
      entry.matchedTopicId = m.matchedTopicId;
      entry.lastError = lastError;
      return;
    }
    if (this.entries.size >= this.options.maxTopics * 4) {
      this.dropped += 1;
      return;
    }
    this.entries.set(key, {
      connectionId: m.connectionId, topic: m.topic, firstSeenAt: m.receivedAt, lastSeenAt: m.receivedAt, messageCount: 1,
      lastPayload: m.excerpt, lastPayloadBytes: m.payloadBytes, lastQos: m.qos, lastRetained: m.retained,
      isProcessable: m.isProcessable, matchedTopicId: m.matchedTopicId, lastError,
    });
    if (this.entries.size >= this.options.maxTopics) void this.flush();
  }

  /** Writes the current aggregates; on failure they are merged back for the next attempt. */
  flush(): Promise<void> {
    this.flushing ??= this.writeOnce().finally(() => {
      this.flushing = undefined;
    });
    return this.flushing;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }

  private async writeOnce(): Promise<void> {
    if (this.entries.size === 0) return;
    const batch = this.entries;
    this.entries = new Map();
    try {
      await upsertDiscoveredTopics(this.sql, [...batch.values()]);
      if (this.dropped > 0) {
        this.logger.warn({ dropped: this.dropped }, 'discovery dropped new topics while the database was unreachable');
        this.dropped = 0;
      }
    } catch (err) {
      this.logger.warn({ err: coerceError(err), topics: batch.size }, 'discovery flush failed; keeping aggregates for the next one');
      for (const [key, old] of batch) {
        const newer = this.entries.get(key);
        if (newer) {
          newer.messageCount += old.messageCount;
          newer.firstSeenAt = old.firstSeenAt;
        } else {
          this.entries.set(key, old);
        }
      }
    }
  }
}
