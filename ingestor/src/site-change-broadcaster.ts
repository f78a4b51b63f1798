import { backoffDelay } from './backoff.ts';
import { CoalescingRunner } from './coalescing-runner.ts';
import { failureLevel, type Db } from './db.ts';
import { coerceError } from './errors.ts';
import type { Logger } from './logger.ts';
import { noMetrics, type IngestorMetrics } from './metrics.ts';
import { sendSiteChanges } from './sql/send-site-changes.ts';

/** The channel the change-outbox triggers notify on (supabase/migrations/20261201000200_coalesced_site_changes.sql). */
export const SITE_CHANGES_CHANNEL = 'site_changes:pending';

export interface SiteChangeBroadcasterOptions {
  /** Broadcast messages per second per site, at most (BFG_REALTIME_MAX_RATE). */
  maxRatePerSite: number;
  /** A flush this often whatever else happens, in case a notification was lost (default 5 s). */
  sweepMs?: number;
  metrics?: Pick<IngestorMetrics, 'databaseError'>;
}

/**
 * Turns the database's change outbox into Realtime broadcasts, at most `maxRatePerSite` messages a
 * second per site, each carrying the latest state of what changed since the previous one.
 *
 * Table is the truth, NOTIFY is a nudge: a flush runs on every notification, on every (re)LISTEN,
 * when the database says the next pending site is due, and on a sweep, so a notification lost
 * while the LISTEN connection was down costs at most one sweep. Flushes never overlap (nudges
 * arriving during one are merged into a single follow-up). The per-site clock lives in the
 * database, so several ingestors together still send each change once and no faster.
 */
export class SiteChangeBroadcaster {
  private readonly runner = new CoalescingRunner(() => this.flushOnce());
  private readonly intervalMs: number;
  private dueTimer: NodeJS.Timeout | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  private unlisten: (() => Promise<void>) | undefined;
  private stopped = false;

  private readonly sql: Db;
  private readonly logger: Logger;
  private readonly sweepMs: number;
  private readonly metrics: Pick<IngestorMetrics, 'databaseError'>;

  constructor(sql: Db, logger: Logger, options: SiteChangeBroadcasterOptions) {
    this.sql = sql;
    this.logger = logger;
    this.metrics = options.metrics ?? noMetrics;
    this.intervalMs = Math.max(1, Math.round(1000 / options.maxRatePerSite));
    this.sweepMs = options.sweepMs ?? 5_000;
  }

  async start(): Promise<void> {
    this.sweepTimer = setInterval(() => void this.flush(), this.sweepMs);
    await this.listen();
  }

  /** Sends what is due now, or once more right after the flush in progress. */
  flush(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return this.runner.run();
  }

  /**
   * Stops listening and sends what is left: once, and if a site still waits only for its
   * interval (the ingestor's last writes came right after a message), once more when it is due.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.sweepTimer);
    clearTimeout(this.dueTimer);
    await this.unlisten?.().catch(() => undefined);
    await this.runner.current;
    const nextDueMs = await this.sendOnce();
    if (nextDueMs !== null && nextDueMs <= this.intervalMs) {
      await new Promise((resolve) => setTimeout(resolve, Math.max(nextDueMs, 1)));
      await this.sendOnce();
    }
  }

  private async flushOnce(): Promise<void> {
    if (this.stopped) return;
    const nextDueMs = await this.sendOnce();
    clearTimeout(this.dueTimer);
    this.dueTimer = undefined;
    if (nextDueMs === null || this.stopped) return;
    // 0: a due site was busy (a writer's open transaction, which nudges again when it commits, or
    // another ingestor's flush); look again after one interval at the latest.
    this.dueTimer = setTimeout(() => void this.flush(), nextDueMs > 0 ? nextDueMs : this.intervalMs);
  }

  /** One call of the database's flush; null also when it failed (logged; the sweep retries). */
  private async sendOnce(): Promise<number | null> {
    try {
      return await sendSiteChanges(this.sql, this.intervalMs);
    } catch (err) {
      this.metrics.databaseError('site_changes');
      this.logger[failureLevel(err)](
        { err: coerceError(err) },
        'sending site changes failed; the next nudge or sweep retries',
      );
      return null;
    }
  }

  /** LISTEN with retries: postgres.js re-LISTENs by itself after a drop (and calls onlisten), but the first one must succeed. */
  private async listen(): Promise<void> {
    for (let attempt = 0; !this.stopped; attempt++) {
      try {
        // The payload is empty by design: the outbox says what to send.
        const subscription = await this.sql.listen(
          SITE_CHANGES_CHANNEL,
          () => void this.flush(),
          () => void this.flush(),
        );
        this.unlisten = () => subscription.unlisten();
        return;
      } catch (err) {
        const delay = backoffDelay(attempt, { maxMs: 10_000 });
        this.logger.warn({ err: coerceError(err), channel: SITE_CHANGES_CHANNEL, delay }, 'LISTEN failed; retrying');
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }
}
