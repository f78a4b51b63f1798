import { z } from 'zod';
import { backoffDelay } from './backoff.ts';
import { failureLevel, isDatabaseError, type Db } from './db.ts';
import { CoalescingRunner } from './coalescing-runner.ts';
import { coerceError } from './errors.ts';
import type { Logger } from './logger.ts';
import { LEASE_CHANNEL } from './sql/leases.ts';
import { noMetrics, type IngestorMetrics } from './metrics.ts';
import type { Supervisor } from './supervisor.ts';

/** Channels the schema's triggers notify on (supabase/migrations). */
export const CONNECTION_CHANNEL = 'mqtt_connection:changed';
export const TOPIC_CHANNEL = 'mqtt_topic:changed';

const notifyPayload = z.object({ id: z.number().int(), op: z.enum(['INSERT', 'UPDATE', 'DELETE']) }).loose();

/**
 * Table is the truth, NOTIFY is a nudge: every notification and every (re)LISTEN runs a full
 * reconcile, and so does a sweep every `sweepMs`, so a notification lost while the LISTEN
 * connection was down costs at most one sweep. Leases add two nudges: every lease round (a
 * renewal, every 0.2 × BFG_LEASE_TAKEOVER_S, see leases.ts), and LEASE_CHANNEL, on which an
 * instance that released leases or joined says so, so that the others take them or hand theirs
 * over at once. Reconciles never overlap; requests that arrive
 * during one are merged into a single follow-up run.
 */
export class ControlLoop {
  private readonly reconciler = new CoalescingRunner(() => this.reconcile());
  private lastReason = 'start';
  private sweepTimer: NodeJS.Timeout | undefined;
  private unlisten: (() => Promise<void>)[] = [];
  private stopped = false;

  private readonly sql: Db;
  private readonly supervisor: Supervisor;
  private readonly logger: Logger;
  private readonly options: { sweepMs: number };
  private readonly metrics: Pick<IngestorMetrics, 'databaseError'>;

  constructor(
    sql: Db,
    supervisor: Supervisor,
    logger: Logger,
    options: { sweepMs: number; metrics?: Pick<IngestorMetrics, 'databaseError'> },
  ) {
    this.sql = sql;
    this.supervisor = supervisor;
    this.logger = logger;
    this.options = options;
    this.metrics = options.metrics ?? noMetrics;
  }

  async start(): Promise<void> {
    this.sweepTimer = setInterval(() => void this.request('sweep'), this.options.sweepMs);
    for (const channel of [CONNECTION_CHANNEL, TOPIC_CHANNEL, LEASE_CHANNEL]) {
      await this.listen(channel);
    }
  }

  /** Runs a reconcile now, or once more right after the one in progress. */
  request(reason: string): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.lastReason = reason;
    return this.reconciler.run();
  }

  private async reconcile(): Promise<void> {
    if (this.stopped) return;
    const reason = this.lastReason;
    try {
      await this.supervisor.reconcile();
      this.logger.debug({ reason }, 'reconciled');
    } catch (err) {
      if (isDatabaseError(err)) this.metrics.databaseError('reconcile');
      this.logger[failureLevel(err)](
        { err: coerceError(err), reason },
        'reconcile failed; the next notification or sweep retries',
      );
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.sweepTimer);
    await Promise.all(this.unlisten.map((u) => u().catch(() => undefined)));
    await this.reconciler.current;
  }

  /** LISTEN with retries: postgres.js re-LISTENs by itself after a drop, but the first one must succeed. */
  private async listen(channel: string): Promise<void> {
    for (let attempt = 0; !this.stopped; attempt++) {
      try {
        const subscription = await this.sql.listen(
          channel,
          (payload) => this.onNotify(channel, payload),
          () => void this.request(`listen ${channel}`),
        );
        this.unlisten.push(() => subscription.unlisten());
        return;
      } catch (err) {
        const delay = backoffDelay(attempt, { maxMs: 10_000 });
        this.logger.warn({ err: coerceError(err), channel, delay }, 'LISTEN failed; retrying');
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  private onNotify(channel: string, payload: string): void {
    if (channel === LEASE_CHANNEL) {
      void this.request(`notify ${channel}`);
      return;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(payload);
    } catch {
      parsed = undefined;
    }
    const result = notifyPayload.safeParse(parsed);
    if (!result.success) {
      // Still a nudge: the table, not the payload, says what to do.
      this.logger.warn({ channel }, 'unexpected NOTIFY payload; reconciling anyway');
    }
    void this.request(`notify ${channel}`);
  }
}
