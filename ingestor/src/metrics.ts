import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ProcessedMessage } from './message-pipeline.ts';
import { connectionStatuses, type ConnectionStatus, type ParsingLogKind } from './vocabulary.ts';

/** Where a database operation failed (the `operation` label of bfg_database_errors_total). */
export type DatabaseOperation = 'write' | 'discovery' | 'status' | 'reconcile' | 'site_changes' | 'lease';

/**
 * What the ingestor's parts tell the metrics — the only way they reach them. Each part is handed
 * the few methods it calls (`Pick<IngestorMetrics, …>`), never prom-client itself. Every label is
 * bounded by the number of connections (a connection id, a status, a parsing-log kind), never by
 * topics or payloads.
 */
export interface IngestorMetrics {
  /** A message came from a broker and was processed (parsed, failed or skipped). */
  messageProcessed(message: ProcessedMessage): void;
  /** A parsed message whose rows the database refused (recorded as a `processing` failure). */
  messageRefused(connectionId: string): void;
  /** A transaction holding `messages` messages committed after `seconds`. */
  batchCommitted(messages: number, seconds: number): void;
  databaseError(operation: DatabaseOperation): void;
  connectionStatus(connectionId: string, site: string, status: ConnectionStatus): void;
  /** A session tries its broker again (after a lost connection or a failed connect). */
  reconnectAttempt(connectionId: string): void;
}

/** For parts built without metrics (the HTTP server is off, or a test builds one part alone). */
export const noMetrics: IngestorMetrics = {
  messageProcessed: () => undefined,
  messageRefused: () => undefined,
  batchCommitted: () => undefined,
  databaseError: () => undefined,
  connectionStatus: () => undefined,
  reconnectAttempt: () => undefined,
};

/** Why a message produced neither rows nor a failure. */
type SkipReason = 'unmatched' | 'empty';

/**
 * The ingestor's Prometheus metrics, in a registry of its own (several ingestors in one process,
 * as in the tests, never share or collide), with Node's process metrics (collectDefaultMetrics).
 */
export class PrometheusMetrics implements IngestorMetrics {
  readonly registry = new Registry();

  private readonly received: Counter<'connection'>;
  private readonly parsed: Counter<'connection'>;
  private readonly failed: Counter<'connection' | 'kind'>;
  private readonly skipped: Counter<'connection' | 'reason'>;
  private readonly batchMessages: Histogram;
  private readonly commitSeconds: Histogram;
  private readonly databaseErrors: Counter<'operation'>;
  private readonly status: Gauge<'connection' | 'site' | 'status'>;
  private readonly reconnects: Counter<'connection'>;
  private readonly known = new Set<string>();
  /**
   * Received and parsed messages per connection since the last scrape, added to the counters when
   * they are collected: a labelled inc() per message hashes its labels, 2 % of the ingestor's CPU
   * at 20,000 messages/s.
   */
  private readonly tallies = new Map<string, { received: number; parsed: number }>();

  /** `pendingMessages` and `pendingBytes` are read at each scrape (the writer's queue, held until committed). */
  constructor(sources: { pendingMessages: () => number; pendingBytes: () => number }) {
    const registers = [this.registry];
    const collect = () => this.addTallies();
    this.received = new Counter({
      name: 'bfg_messages_received_total',
      help: 'Messages received from brokers',
      labelNames: ['connection'],
      registers,
      collect,
    });
    this.parsed = new Counter({
      name: 'bfg_messages_parsed_total',
      help: 'Messages a parser turned into rows',
      labelNames: ['connection'],
      registers,
      collect,
    });
    this.failed = new Counter({
      name: 'bfg_messages_failed_total',
      help: 'Messages recorded in the parsing log, by kind (processing: parsed, but the database refused the rows)',
      labelNames: ['connection', 'kind'],
      registers,
    });
    this.skipped = new Counter({
      name: 'bfg_messages_skipped_total',
      help: 'Messages neither parsed nor failed: no active pattern matched (unmatched), or an empty payload (empty)',
      labelNames: ['connection', 'reason'],
      registers,
    });
    this.batchMessages = new Histogram({
      name: 'bfg_batch_messages',
      help: 'Messages per committed write transaction',
      buckets: [1, 5, 10, 50, 100, 500, 1_000, 2_500, 5_000, 10_000],
      registers,
    });
    this.commitSeconds = new Histogram({
      name: 'bfg_batch_commit_seconds',
      help: 'Duration of a write transaction that committed, from begin to commit',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    new Gauge({
      name: 'bfg_pending_messages',
      help: 'Messages received and not yet committed (past BFG_MAX_PENDING_MESSAGES brokers are not read)',
      registers,
      collect() {
        this.set(sources.pendingMessages());
      },
    });
    new Gauge({
      name: 'bfg_pending_bytes',
      help: 'Memory those messages take, estimated (past BFG_MAX_PENDING_BYTES brokers are not read)',
      registers,
      collect() {
        this.set(sources.pendingBytes());
      },
    });
    this.databaseErrors = new Counter({
      name: 'bfg_database_errors_total',
      help: 'Failed database operations (each retried), by operation',
      labelNames: ['operation'],
      registers,
    });
    this.status = new Gauge({
      name: 'bfg_connection_status',
      help: 'Status of each connection this ingestor runs: 1 for its current status, 0 for the others',
      labelNames: ['connection', 'site', 'status'],
      registers,
    });
    this.reconnects = new Counter({
      name: 'bfg_reconnects_total',
      help: 'Reconnect attempts to a broker (after a lost connection or a failed connect)',
      labelNames: ['connection'],
      registers,
    });
    collectDefaultMetrics({ register: this.registry });
  }

  /** The Content-Type of `render()`'s text (Prometheus text format 0.0.4). */
  get contentType(): string {
    return this.registry.contentType;
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }

  messageProcessed(message: ProcessedMessage): void {
    const connection = message.connectionId;
    let tally = this.tallies.get(connection);
    if (!tally) {
      tally = { received: 0, parsed: 0 };
      this.tallies.set(connection, tally);
    }
    tally.received += 1;
    if (message.failure) this.failed.inc({ connection, kind: message.failure.kind });
    else if (message.rows) tally.parsed += 1;
    else this.skipped.inc({ connection, reason: skipReason(message) });
  }

  private addTallies(): void {
    for (const [connection, tally] of this.tallies) {
      if (tally.received > 0) this.received.inc({ connection }, tally.received);
      if (tally.parsed > 0) this.parsed.inc({ connection }, tally.parsed);
      tally.received = 0;
      tally.parsed = 0;
    }
  }

  messageRefused(connectionId: string): void {
    this.failed.inc({ connection: connectionId, kind: 'processing' satisfies ParsingLogKind });
  }

  batchCommitted(messages: number, seconds: number): void {
    this.batchMessages.observe(messages);
    this.commitSeconds.observe(seconds);
  }

  databaseError(operation: DatabaseOperation): void {
    this.databaseErrors.inc({ operation });
  }

  connectionStatus(connectionId: string, site: string, status: ConnectionStatus): void {
    for (const each of connectionStatuses)
      this.status.set({ connection: connectionId, site, status: each }, each === status ? 1 : 0);
    if (this.known.has(connectionId)) return;
    // A connection's counters start at 0 when it is first seen, so rate() has a start point.
    this.known.add(connectionId);
    this.received.inc({ connection: connectionId }, 0);
    this.parsed.inc({ connection: connectionId }, 0);
    this.reconnects.inc({ connection: connectionId }, 0);
  }

  reconnectAttempt(connectionId: string): void {
    this.reconnects.inc({ connection: connectionId });
  }
}

function skipReason(message: ProcessedMessage): SkipReason {
  return message.payloadBytes === 0 ? 'empty' : 'unmatched';
}
