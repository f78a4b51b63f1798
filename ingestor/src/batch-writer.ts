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
import { heldBytes } from './message-pipeline.ts';
import {
  StaleSensorCacheError,
  newSensorIdCache,
  prepareBatch,
  writeBatch,
  writePrepared,
  type BatchStats,
  type SensorIdCache,
} from './write-batch.ts';

/** Called once a message's rows are committed (no error), or with why they never will be. */
export type WriteDone = (err?: Error) => void;

interface Pending {
  message: ProcessedMessage;
  /** The lease of the session that received it; its write is fenced by it. */
  lease: LeaseToken | undefined;
  /** heldBytes(message), counted against maxPendingBytes until it is done. */
  bytes: number;
  /** When it was queued (performance.now(), whole ms). */
  at: number;
  done: WriteDone;
}

/** Write transactions at once, unless told otherwise: one commits while the next is prepared and sent. */
const DEFAULT_IN_FLIGHT = 2;

/**
 * SQLSTATEs of a transaction that lost a race with another and may simply run again: deadlock
 * detected, serialization failure. Batches lock shared rows in one order (write-batch.ts), so two
 * of the writer's own never deadlock; a batch can still meet another writer (a replay, psql).
 */
const RETRY_AT_ONCE = new Set(['40P01', '40001']);

const IGNORE: WriteDone = () => undefined;

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
  /**
   * Bytes those messages take (heldBytes: measured per message, by what it carries), at most,
   * before `hasRoom()` turns false. Unset: no bound but maxPending.
   */
  maxPendingBytes?: number;
  /** Write transactions at once (default 2: the next batch is prepared and sent while one commits). */
  maxInFlight?: number;
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
 * Collects processed messages from every broker connection and writes them in batches, up to
 * `maxInFlight` transactions at a time (the second starts once a full batch waits, or its oldest
 * message has waited `maxWaitMs`: at low rates there is one). A message is done when its rows are
 * committed — the moment its QoS 1 PUBACK may be sent; batches may commit out of order, sessions
 * send PUBACKs in arrival order (broker-session.ts). While the database is unreachable batches are
 * retried with capped backoff; the queue then fills up to `maxPending` messages or
 * `maxPendingBytes`, `hasRoom()` turns false, and sessions stop handing MQTT.js their callbacks, so
 * nothing more is read from the brokers and memory stays bounded.
 */
export class BatchWriter {
  private queue: Pending[] = [];
  private inFlight = 0;
  private queuedBytes = 0;
  private inFlightBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  /** The write transactions under way (each with its retries). */
  private readonly writes = new Set<Promise<void>>();
  /** While flush() runs, every queued message is written without waiting for a batch to fill. */
  private flushing = 0;
  private roomWaiters: (() => void)[] = [];
  private closed = false;
  private readonly retryTimers = new Set<{ timer: NodeJS.Timeout; wake: () => void }>();
  /**
   * Replaced, never cleared: a write in flight keeps the map it started with, and learns that an id
   * in it went stale from its own statements (StaleSensorCacheError).
   */
  private sensorIds: SensorIdCache = newSensorIdCache();
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

  /** Resolves when the message's rows are committed. */
  submit(message: ProcessedMessage, lease?: LeaseToken): Promise<void> {
    return new Promise<void>((resolve, reject) =>
      this.enqueue(message, lease, (err) => (err ? reject(err) : resolve())),
    );
  }

  /**
   * `submit` without a promise: `done` is called once (never synchronously). What sessions use —
   * a message waits here for its commit, and a promise with its two resolvers and reactions was a
   * quarter of what it held.
   */
  enqueue(message: ProcessedMessage, lease: LeaseToken | undefined, done: WriteDone = IGNORE): void {
    if (this.closed) {
      queueMicrotask(() => done(new WriterClosedError('the writer is closed')));
      return;
    }
    const bytes = heldBytes(message);
    this.queue.push({ message, lease, bytes, at: Math.floor(performance.now()), done });
    this.queuedBytes += bytes;
    if (this.queue.length >= this.options.maxBatchMessages) this.kick();
    else this.timer ??= setTimeout(() => this.kick(), this.options.maxWaitMs);
  }

  /** Messages accepted and not yet committed. */
  get pending(): number {
    return this.queue.length + this.inFlight;
  }

  /** heldBytes of the messages accepted and not yet committed. */
  get pendingBytes(): number {
    return this.queuedBytes + this.inFlightBytes;
  }

  hasRoom(): boolean {
    return this.pending < this.options.maxPending && this.pendingBytes < (this.options.maxPendingBytes ?? Infinity);
  }

  /** Resolves when `hasRoom()` is true again. */
  waitForRoom(): Promise<void> {
    if (this.hasRoom()) return Promise.resolve();
    return new Promise((resolve) => this.roomWaiters.push(resolve));
  }

  /** Writes everything queued so far. */
  async flush(): Promise<void> {
    this.flushing += 1;
    try {
      this.kick();
      while (this.writes.size > 0) await Promise.race(this.writes);
    } finally {
      this.flushing -= 1;
    }
  }

  /**
   * Writes what is queued, giving up after `timeoutMs` if the database stays away: the messages
   * not committed by then are rejected (their PUBACKs are never sent, so the broker redelivers them).
   */
  async close(timeoutMs: number): Promise<void> {
    const deadline = setTimeout(() => {
      this.closed = true;
      this.wakeRetries();
    }, timeoutMs);
    // Try now instead of sleeping out a retry delay of up to maxRetryDelayMs: a stop that comes
    // while the database is away or just back should not wait for the next scheduled attempt.
    this.wakeRetries();
    try {
      await this.flush();
    } finally {
      clearTimeout(deadline);
      this.closed = true;
      const unwritten = this.queue.splice(0);
      this.queuedBytes = 0;
      for (const p of unwritten) p.done(new WriterClosedError('the writer closed before this message was written'));
      this.wakeRoomWaiters();
    }
  }

  /**
   * Starts the writes the queue is ready for: with no write under way, whatever is queued (called
   * when a batch is full, when its first message has waited maxWaitMs, and when a write ends);
   * beside one under way, only a full batch, or one whose oldest message has waited maxWaitMs.
   */
  private kick(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const { maxBatchMessages, maxWaitMs } = this.options;
    const maxInFlight = this.options.maxInFlight ?? DEFAULT_IN_FLIGHT;
    while (!this.closed && this.queue.length > 0 && this.writes.size < maxInFlight) {
      if (this.writes.size > 0 && this.flushing === 0 && this.queue.length < maxBatchMessages) {
        const waited = performance.now() - this.queue[0]!.at;
        if (waited < maxWaitMs) {
          this.timer = setTimeout(() => this.kick(), maxWaitMs - waited);
          return;
        }
      }
      this.start(this.queue.splice(0, maxBatchMessages));
    }
  }

  private start(batch: Pending[]): void {
    let bytes = 0;
    for (const p of batch) bytes += p.bytes;
    this.queuedBytes -= bytes;
    this.inFlightBytes += bytes;
    this.inFlight += batch.length;
    const write: Promise<void> = this.writeWithRetry(batch).finally(() => {
      this.writes.delete(write);
      this.inFlight -= batch.length;
      this.inFlightBytes -= bytes;
      this.wakeRoomWaiters();
      this.kick();
    });
    this.writes.add(write);
  }

  private async writeWithRetry(pendings: Pending[]): Promise<void> {
    let batch = pendings;
    let outageLogged = false;
    for (let attempt = 0; ; attempt++) {
      try {
        // Prepared before the transaction, so that it holds its connection for statements only.
        let prepared = prepareBatch(batch.map((p) => p.message));
        let fenced: Pending[] = [];
        const stats = await this.commit(batch.length, async (tx, sensorIds) => {
          const { writable, refused } = await this.fenceOff(tx, batch);
          fenced = refused;
          if (refused.length > 0) prepared = prepareBatch(writable.map((p) => p.message));
          return writePrepared(tx, prepared, sensorIds);
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
        for (const p of batch) p.done();
        if (this.options.onParsingFailures && prepared.failures.length > 0)
          this.options.onParsingFailures(prepared.failures);
        return;
      } catch (err) {
        if (err instanceof StaleSensorCacheError) continue;
        if (RETRY_AT_ONCE.has((err as { code?: string }).code ?? '')) {
          this.totals.retries += 1;
          continue;
        }
        this.metrics.databaseError('write');
        if (!isConnectionError(err)) {
          await this.writeOneByOne(batch, coerceError(err));
          return;
        }
        if (this.closed) {
          for (const p of batch) p.done(new WriterClosedError('database unreachable at shutdown'));
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
        await this.commit(1, async (tx, sensorIds) => {
          const { writable } = await this.fenceOff(tx, [p]);
          fenced = writable.length === 0;
          return writeBatch(tx, fenced ? [] : [p.message], sensorIds);
        });
        if (fenced) this.refuse([p]);
        else p.done();
      } catch (err) {
        this.metrics.databaseError('write');
        if (isConnectionError(err)) {
          p.done(coerceError(err));
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
          await this.commit(1, (tx, sensorIds) => writeBatch(tx, [failed], sensorIds));
        } catch (logErr) {
          this.metrics.databaseError('write');
          this.logger.error(
            { err: coerceError(logErr), topic: failed.topic },
            'could not record a refused message; dropping it',
          );
        }
        p.done();
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
    for (const p of fenced) p.done(new LeaseLostError('lease lost: another instance took the connection over'));
  }

  /** One write transaction with the current sensor id cache, timed for the metrics when it commits. */
  private async commit(
    messages: number,
    write: (tx: TransactionSql, sensorIds: SensorIdCache) => Promise<BatchStats>,
  ): Promise<BatchStats> {
    const started = performance.now();
    const sensorIds = this.sensorIds;
    let result: BatchStats;
    try {
      result = await this.sql.begin((tx) => write(tx, sensorIds));
    } catch (err) {
      // writeBatch caches the ids of the sensors it created; rolled back, they do not exist. Kept,
      // every later write naming them would fail (one by one: each good message logged as refused).
      // Also what a StaleSensorCacheError asks for.
      if (this.sensorIds === sensorIds) this.sensorIds = newSensorIdCache();
      throw err;
    }
    this.metrics.batchCommitted(messages, (performance.now() - started) / 1000);
    return result;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(entry.timer);
        this.retryTimers.delete(entry);
        resolve();
      };
      const entry = { timer: setTimeout(() => wake(), ms), wake };
      this.retryTimers.add(entry);
    });
  }

  private wakeRetries(): void {
    for (const entry of [...this.retryTimers]) entry.wake();
  }

  private wakeRoomWaiters(): void {
    while (this.roomWaiters.length > 0 && (this.hasRoom() || this.closed)) this.roomWaiters.shift()!();
  }
}
