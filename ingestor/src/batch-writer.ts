import type { TransactionSql } from 'postgres';
import type { Db } from './db.ts';
import { isConnectionError } from './db.ts';
import { backoffDelay } from './backoff.ts';
import { coerceError } from './errors.ts';
import { LeaseLostError, type LeaseToken } from './leases.ts';
import { fenceKey } from './sql/leases.ts';
import type { Logger } from './logger.ts';
import type { ProcessedMessage } from './message-pipeline.ts';
import { noMetrics, type IngestorMetrics } from './metrics.ts';
import type { ParsingLogUpsert } from './sql/write-logs.ts';
import {
  StaleSensorCacheError,
  aggregateFailures,
  writeBatch,
  type BatchStats,
  type SensorIdCache,
} from './write-batch.ts';

interface Pending {
  message: ProcessedMessage;
  /** The lease of the session that received it; its write is fenced by it. */
  lease: LeaseToken | undefined;
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * Connection leases (leases.ts): called first in every write transaction with the leases of its
 * messages, it returns the ones still held (as `fenceKey`s) and locks them against takeover until the
 * transaction ends. Messages under the other leases are not written, and are rejected with a
 * LeaseLostError (no PUBACK: the broker gives them to the new owner).
 */
export type WriteFence = (tx: TransactionSql, leases: LeaseToken[]) => Promise<Set<string>>;

export interface BatchWriterOptions {
  maxBatchMessages: number;
  maxWaitMs: number;
  /** Messages held (queued or being written) before `hasRoom()` turns false and brokers stop being read. */
  maxPending: number;
  /** Cap of the retry delay while the database is unreachable. */
  maxRetryDelayMs: number;
  /** Called with the aggregated parsing failures of each committed batch (for the parsing log file). */
  onParsingFailures?: (rows: ParsingLogUpsert[]) => void;
  fence?: WriteFence;
  metrics?: Pick<IngestorMetrics, 'batchCommitted' | 'databaseError' | 'messageRefused'>;
}

export class WriterClosedError extends Error {
  override name = 'WriterClosedError';
}

/**
 * Collects processed messages from every broker connection and writes them in batches, one
 * transaction at a time. `submit` resolves when the message's rows are committed — the moment its
 * QoS 1 PUBACK may be sent. While the database is unreachable the current batch is retried with
 * capped backoff; the queue then fills up to `maxPending`, `hasRoom()` turns false, and sessions stop
 * handing MQTT.js their callbacks, so nothing more is read from the brokers and memory stays bounded.
 */
export class BatchWriter {
  private queue: Pending[] = [];
  private inFlight = 0;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private roomWaiters: (() => void)[] = [];
  private closed = false;
  private retryTimer: { timer: NodeJS.Timeout; wake: () => void } | undefined;
  private readonly sensorIds: SensorIdCache = new Map();
  /** Totals since start, for metrics and the benchmark. */
  readonly totals = { messages: 0, readings: 0, inserted: 0, batches: 0, retries: 0 };

  private readonly sql: Db;
  private readonly logger: Logger;
  private readonly options: BatchWriterOptions;
  private readonly metrics: Pick<IngestorMetrics, 'batchCommitted' | 'databaseError' | 'messageRefused'>;

  constructor(sql: Db, logger: Logger, options: BatchWriterOptions) {
    this.sql = sql;
    this.logger = logger;
    this.options = options;
    this.metrics = options.metrics ?? noMetrics;
  }

  submit(message: ProcessedMessage, lease?: LeaseToken): Promise<void> {
    if (this.closed) return Promise.reject(new WriterClosedError('the writer is closed'));
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ message, lease, resolve, reject });
      if (this.queue.length >= this.options.maxBatchMessages) this.kick();
      else this.timer ??= setTimeout(() => this.kick(), this.options.maxWaitMs);
    });
  }

  /** Messages accepted and not yet committed. */
  get pending(): number {
    return this.queue.length + this.inFlight;
  }

  hasRoom(): boolean {
    return this.pending < this.options.maxPending;
  }

  /** Resolves when `hasRoom()` is true again. */
  waitForRoom(): Promise<void> {
    if (this.hasRoom()) return Promise.resolve();
    return new Promise((resolve) => this.roomWaiters.push(resolve));
  }

  /** Writes everything queued so far. */
  async flush(): Promise<void> {
    this.kick();
    while (this.running) await this.running;
  }

  /**
   * Writes what is queued, giving up after `timeoutMs` if the database stays away: the messages
   * not committed by then are rejected (their PUBACKs are never sent, so the broker redelivers them).
   */
  async close(timeoutMs: number): Promise<void> {
    const deadline = setTimeout(() => {
      this.closed = true;
      this.retryTimer?.wake();
    }, timeoutMs);
    // Try now instead of sleeping out a retry delay of up to maxRetryDelayMs: a stop that comes
    // while the database is away or just back should not wait for the next scheduled attempt.
    this.retryTimer?.wake();
    try {
      await this.flush();
    } finally {
      clearTimeout(deadline);
      this.closed = true;
      for (const p of this.queue.splice(0))
        p.reject(new WriterClosedError('the writer closed before this message was written'));
      this.wakeRoomWaiters();
    }
  }

  private kick(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.running || this.queue.length === 0) return;
    this.running = this.drain().finally(() => {
      this.running = undefined;
      if (this.queue.length > 0 && !this.closed) this.kick();
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.options.maxBatchMessages);
      this.inFlight = batch.length;
      try {
        await this.writeWithRetry(batch);
      } finally {
        this.inFlight = 0;
        this.wakeRoomWaiters();
      }
      if (this.closed) return;
    }
  }

  private async writeWithRetry(pendings: Pending[]): Promise<void> {
    let batch = pendings;
    let outageLogged = false;
    for (let attempt = 0; ; attempt++) {
      try {
        let fenced: Pending[] = [];
        const stats = await this.commit(batch.length, async (tx) => {
          const { writable, refused } = await this.fenceOff(tx, batch);
          fenced = refused;
          return writeBatch(
            tx,
            writable.map((p) => p.message),
            this.sensorIds,
          );
        });
        if (fenced.length > 0) {
          this.refuse(fenced);
          const refused = new Set(fenced);
          batch = batch.filter((p) => !refused.has(p));
        }
        this.totals.messages += stats.messages;
        this.totals.readings += stats.readings;
        this.totals.inserted += stats.inserted;
        this.totals.batches += 1;
        if (outageLogged) this.logger.info({ attempts: attempt + 1 }, 'database reachable again; writing resumed');
        for (const p of batch) p.resolve();
        if (this.options.onParsingFailures) {
          const failures = aggregateFailures(batch.map((p) => p.message));
          if (failures.length > 0) this.options.onParsingFailures(failures);
        }
        return;
      } catch (err) {
        if (err instanceof StaleSensorCacheError) {
          this.sensorIds.clear();
          continue;
        }
        this.metrics.databaseError('write');
        if (!isConnectionError(err)) {
          await this.writeOneByOne(batch, coerceError(err));
          return;
        }
        if (this.closed) {
          for (const p of batch) p.reject(new WriterClosedError('database unreachable at shutdown'));
          return;
        }
        if (!outageLogged) {
          this.logger.warn(
            { err: coerceError(err), messages: batch.length },
            'database unreachable; holding messages unacknowledged and retrying',
          );
          outageLogged = true;
        }
        this.totals.retries += 1;
        await this.sleep(backoffDelay(attempt, { baseMs: 100, maxMs: this.options.maxRetryDelayMs }));
      }
    }
  }

  /**
   * A batch failed for a reason other than connectivity (a row the database refused). Write its
   * messages one by one so only the culprit is affected; a culprit becomes a `processing` entry in
   * the parsing log and is acknowledged, so it cannot block the stream.
   */
  private async writeOneByOne(batch: Pending[], cause: Error): Promise<void> {
    this.logger.warn(
      { err: cause, messages: batch.length },
      'batch refused by the database; retrying its messages one by one',
    );
    for (const p of batch) {
      try {
        let fenced = false;
        await this.commit(1, async (tx) => {
          const { writable } = await this.fenceOff(tx, [p]);
          fenced = writable.length === 0;
          return writeBatch(tx, fenced ? [] : [p.message], this.sensorIds);
        });
        if (fenced) this.refuse([p]);
        else p.resolve();
      } catch (err) {
        this.metrics.databaseError('write');
        if (isConnectionError(err)) {
          p.reject(coerceError(err));
          continue;
        }
        const failed: ProcessedMessage = {
          ...p.message,
          rows: null,
          archivePayload: null,
          failure: {
            kind: 'processing',
            parser: p.message.failure?.parser ?? null,
            message: `the database refused the rows: ${coerceError(err).message}`.slice(0, 1000),
            issuePaths: [],
            fingerprint: `processing:${(err as { code?: string }).code ?? 'unknown'}:${p.message.matchedTopicId ?? p.message.topic}`,
          },
        };
        this.metrics.messageRefused(failed.connectionId);
        try {
          await this.commit(1, (tx) => writeBatch(tx, [failed], this.sensorIds));
        } catch (logErr) {
          this.metrics.databaseError('write');
          this.logger.error(
            { err: coerceError(logErr), topic: failed.topic },
            'could not record a refused message; dropping it',
          );
        }
        p.resolve();
      }
    }
  }

  /** The fence (first in the transaction): which of these messages may be written under their lease. */
  private async fenceOff(tx: TransactionSql, batch: Pending[]): Promise<{ writable: Pending[]; refused: Pending[] }> {
    const fence = this.options.fence;
    if (!fence) return { writable: batch, refused: [] };
    const leases = new Map<string, LeaseToken>();
    for (const p of batch) if (p.lease) leases.set(fenceKey(p.lease), p.lease);
    if (leases.size === 0) return { writable: batch, refused: [] };
    const held = await fence(tx, [...leases.values()]);
    const writable: Pending[] = [];
    const refused: Pending[] = [];
    for (const p of batch) {
      if (!p.lease || held.has(fenceKey(p.lease))) writable.push(p);
      else refused.push(p);
    }
    return { writable, refused };
  }

  private refuse(fenced: Pending[]): void {
    this.logger.warn(
      { messages: fenced.length },
      'lease lost: not writing (nor acknowledging) messages of a connection another instance took over',
    );
    for (const p of fenced) p.reject(new LeaseLostError('lease lost: another instance took the connection over'));
  }

  /** One write transaction, timed for the metrics when it commits. */
  private async commit(messages: number, write: (tx: TransactionSql) => Promise<BatchStats>): Promise<BatchStats> {
    const started = performance.now();
    let result: BatchStats;
    try {
      result = await this.sql.begin(write);
    } catch (err) {
      // writeBatch caches the ids of the sensors it created; rolled back, they do not exist. Kept,
      // every later write naming them would fail (one by one: each good message logged as refused).
      this.sensorIds.clear();
      throw err;
    }
    this.metrics.batchCommitted(messages, (performance.now() - started) / 1000);
    return result;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.retryTimer = undefined;
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.retryTimer = { timer, wake };
    });
  }

  private wakeRoomWaiters(): void {
    while (this.roomWaiters.length > 0 && (this.hasRoom() || this.closed)) this.roomWaiters.shift()!();
  }
}
