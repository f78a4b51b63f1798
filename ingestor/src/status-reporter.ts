import { failureLevel, type Db } from './db.ts';
import { PeriodicWriter } from './coalescing-runner.ts';
import { coerceError } from './errors.ts';
import type { Logger } from './logger.ts';
import { noMetrics, type IngestorMetrics } from './metrics.ts';
import { writeLastMessageAt, writeStatusChanges, type StatusChange } from './sql/connections.ts';

/** Log rows kept while the database is unreachable; the oldest go first past this. */
const MAX_PENDING_LOG_ROWS = 1_000;

/**
 * Keeps mqtt_connection's observed state true: every transition is written at once (with a row in
 * mqtt_connection_log and a line in the connection log file); `last_message_at` is written every
 * `flushMs`, not per message. A session's status lands only while nobody took its lease since
 * (the lease epoch is unchanged); its log rows always do, with this instance's name. If the database is away, the latest status per connection and the
 * newest log rows wait in memory and are written by the next flush.
 */
export class StatusReporter {
  private latest = new Map<string, StatusChange>();
  private log: StatusChange[] = [];
  private activity = new Map<string, Date>();
  private readonly writer: PeriodicWriter;

  private readonly sql: Db;
  private readonly fileLog: Logger;
  private readonly logger: Logger;
  private readonly options: { instance: string; flushMs: number; idleTimeoutMs: number };
  private readonly metrics: Pick<IngestorMetrics, 'databaseError'>;

  constructor(
    sql: Db,
    fileLog: Logger,
    logger: Logger,
    options: {
      instance: string;
      flushMs: number;
      /** How long a status transaction may sit idle (a paused process) before Postgres ends it (leases.ts). */
      idleTimeoutMs: number;
      metrics?: Pick<IngestorMetrics, 'databaseError'>;
    },
  ) {
    this.sql = sql;
    this.fileLog = fileLog;
    this.logger = logger;
    this.options = options;
    this.metrics = options.metrics ?? noMetrics;
    this.writer = new PeriodicWriter(() => this.writeOnce(), this.options.flushMs);
  }

  start(): void {
    this.writer.start();
  }

  report(change: Omit<StatusChange, 'at'>): void {
    const full = { ...change, at: new Date() };
    this.fileLog[change.level](
      { connectionId: change.connectionId, event: change.event, status: change.status, detail: change.detail },
      'connection',
    );
    this.latest.set(`${change.connectionId}/${change.slot}`, full);
    this.log.push(full);
    if (this.log.length > MAX_PENDING_LOG_ROWS) this.log.splice(0, this.log.length - MAX_PENDING_LOG_ROWS);
    void this.flush();
  }

  /** Notes that a connection received a message (cheap; written by the next flush). */
  touch(connectionId: string, at: Date): void {
    this.activity.set(connectionId, at);
  }

  /** Writes pending changes; concurrent calls are merged into one follow-up write. */
  flush(): Promise<void> {
    return this.writer.run();
  }

  stop(): Promise<void> {
    return this.writer.stop();
  }

  private async writeOnce(): Promise<void> {
    const latest = [...this.latest.values()];
    const log = this.log;
    const activity = [...this.activity].map(([connectionId, at]) => ({ connectionId, at }));
    this.latest = new Map();
    this.log = [];
    this.activity = new Map();
    try {
      if (latest.length > 0 || log.length > 0) await writeStatusChanges(this.sql, latest, log, this.options);
      await writeLastMessageAt(this.sql, activity);
    } catch (err) {
      this.metrics.databaseError('status');
      this.logger[failureLevel(err)]({ err: coerceError(err) }, 'could not write connection status; will retry');
      for (const change of latest) {
        const key = `${change.connectionId}/${change.slot}`;
        if (!this.latest.has(key)) this.latest.set(key, change);
      }
      this.log = [...log, ...this.log].slice(-MAX_PENDING_LOG_ROWS);
      for (const { connectionId, at } of activity)
        if (!this.activity.has(connectionId)) this.activity.set(connectionId, at);
    }
  }
}
