import { failureLevel, type Db } from './db.ts';
import { PeriodicWriter } from './coalescing-runner.ts';
import { coerceError } from './errors.ts';
import type { Logger } from './logger.ts';
import { noMetrics, type IngestorMetrics } from './metrics.ts';
import type { ProcessedMessage } from './message-pipeline.ts';
import { upsertDiscoveredTopics, type DiscoveredTopicUpsert } from './sql/upsert-discovered-topics.ts';

/**
 * Aggregates every message's topic in memory (count, first/last seen, last payload excerpt, the
 * pattern that matched) and writes the aggregates in one statement per flush, so discovery costs
 * one row write per topic per flush instead of one per message.
 *
 * Memory is bounded: past `maxTopics` distinct topics a write starts early; past 2× sessions stop
 * reading from brokers until it is done (`hasRoom`); if the database is away and the map still
 * reaches 4×, new topics are counted as dropped until a write succeeds (topics already in the map
 * keep being updated).
 */
export class DiscoveryAggregator {
  private entries = new Map<string, DiscoveredTopicUpsert>();
  private readonly writer: PeriodicWriter;
  /** New topics not recorded since the last successful write (only while the database lags far behind). */
  dropped = 0;
  /** Same, since start. */
  droppedTotal = 0;

  private readonly sql: Db;
  private readonly logger: Logger;
  private readonly options: { flushMs: number; maxTopics: number };
  private readonly metrics: Pick<IngestorMetrics, 'databaseError'>;

  constructor(
    sql: Db,
    logger: Logger,
    options: { flushMs: number; maxTopics: number; metrics?: Pick<IngestorMetrics, 'databaseError'> },
  ) {
    this.sql = sql;
    this.logger = logger;
    this.options = options;
    this.metrics = options.metrics ?? noMetrics;
    this.writer = new PeriodicWriter(() => this.writeOnce(), this.options.flushMs);
  }

  /** Distinct topics currently held in memory. */
  get size(): number {
    return this.entries.size;
  }

  start(): void {
    this.writer.start();
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
      this.droppedTotal += 1;
      return;
    }
    this.entries.set(key, {
      connectionId: m.connectionId,
      topic: m.topic,
      firstSeenAt: m.receivedAt,
      lastSeenAt: m.receivedAt,
      messageCount: 1,
      lastPayload: m.excerpt,
      lastPayloadBytes: m.payloadBytes,
      lastQos: m.qos,
      lastRetained: m.retained,
      isProcessable: m.isProcessable,
      matchedTopicId: m.matchedTopicId,
      lastError,
    });
    if (this.entries.size >= this.options.maxTopics) void this.flush();
  }

  /**
   * False while more than 2× maxTopics distinct topics wait for a write: sessions then stop reading
   * from brokers until `waitForRoom()` resolves, as they do for the batch writer.
   */
  hasRoom(): boolean {
    return this.entries.size < this.options.maxTopics * 2;
  }

  async waitForRoom(): Promise<void> {
    while (!this.hasRoom()) await this.flush();
  }

  /**
   * Writes the current aggregates (after the write in progress, if any: aggregates recorded
   * meanwhile are never left behind). On failure they are merged back for the next attempt.
   */
  flush(): Promise<void> {
    return this.writer.run();
  }

  stop(): Promise<void> {
    return this.writer.stop();
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
      this.metrics.databaseError('discovery');
      this.logger[failureLevel(err)](
        { err: coerceError(err), topics: batch.size },
        'discovery flush failed; keeping aggregates for the next one',
      );
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
