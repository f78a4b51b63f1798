import { EventEmitter } from 'node:events';
import { CoalescingRunner } from './coalescing-runner.ts';
import { failureLevel, isDatabaseError, type Db } from './db.ts';
import { coerceError } from './errors.ts';
import type { Logger } from './logger.ts';
import { noMetrics, type IngestorMetrics } from './metrics.ts';
import {
  acquireLeases,
  announceInstance,
  createMemberLease,
  leaseKey,
  releaseLeases,
  renewLeases,
  type LeaseToken,
} from './sql/leases.ts';

export { leaseKey, type LeaseToken } from './sql/leases.ts';

/** A write or a session under a lease this instance no longer holds. */
export class LeaseLostError extends Error {
  override name = 'LeaseLostError';
}

/**
 * The lease numbers, all derived from BFG_LEASE_TAKEOVER_S (T): a lease lasts 0.6 T and is renewed
 * every 0.2 T (three renewals per lease, so one failed round trip costs nothing), and every instance
 * looks for free leases as often. A dead owner's lease thus runs out at most 0.6 T after its last
 * renewal, and another instance takes it at most 0.2 T later: within 0.8 T, leaving 0.2 T for the
 * database round trips and the new broker connection. A write transaction may sit idle (its
 * instance paused) for 0.3 T at most before Postgres ends it, which is shorter than a lease minus
 * a renewal interval, so the locks of a paused writer are gone before its lease can expire.
 */
export interface LeaseTiming {
  ttlMs: number;
  tickMs: number;
  idleTimeoutMs: number;
}

export function leaseTiming(takeoverS: number): LeaseTiming {
  const takeoverMs = takeoverS * 1000;
  return { ttlMs: 0.6 * takeoverMs, tickMs: 0.2 * takeoverMs, idleTimeoutMs: 0.3 * takeoverMs };
}

/**
 * The part of this instance's own clock in a lease: a lease renewed by a statement sent at local
 * time t is taken as valid until t + this share of the ttl. The database set now() + ttl with a
 * now() after t, so nobody can take the lease before then; the margin covers clocks that tick
 * at slightly different rates.
 */
const LOCAL_VALIDITY = 0.9;

/** What a broker session knows of its lease. */
export interface SessionLease {
  readonly token: LeaseToken;
  /** Valid by this instance's clock: nobody else can hold it right now. */
  valid(): boolean;
  /**
   * Resolves true once the lease is valid again (now, or after a renewal, waiting out a database
   * outage), false when it is lost or this instance stops.
   */
  confirm(): Promise<boolean>;
  /** The database refused a write under this lease (another instance took it). */
  lost(reason: string): void;
}

export interface LeasesEvents {
  /** A lease this instance held was taken by another (or the connection removed). */
  lost: [token: LeaseToken, reason: string];
}

interface Held {
  token: LeaseToken;
  /** performance.now() until which nobody else can hold it. */
  validUntil: number;
}

/**
 * The leases this instance holds: renewed (with the instance's heartbeat) every `tickMs`, taken and
 * given up by the supervisor's plan (lease-plan.ts), and watched by this instance's clock so that a
 * session that was paused past its lease stops reading, writing and acknowledging until a renewal
 * says the lease is still its own.
 */
export class Leases extends EventEmitter<LeasesEvents> {
  private readonly held = new Map<string, Held>();
  /** Leases handed over to balance the instances, with until when not to take them back. */
  private readonly handedOver = new Map<string, number>();
  private readonly renewer = new CoalescingRunner(() => this.renewOnce());
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Resolved after every renewal attempt (confirm() waits on it). */
  private renewed: { promise: Promise<void>; resolve: () => void } = deferred();
  private failing = false;
  /** When renewals work again after failing (-Infinity: they never failed). */
  private healthySince = Number.NEGATIVE_INFINITY;

  private readonly sql: Db;
  private readonly logger: Logger;
  readonly instance: string;
  readonly timing: LeaseTiming;
  private readonly onTick: () => void;
  private readonly metrics: Pick<IngestorMetrics, 'databaseError'>;

  constructor(
    sql: Db,
    logger: Logger,
    options: {
      instance: string;
      timing: LeaseTiming;
      /** After each renewal round: the supervisor plans (takes free leases, hands over excess). */
      onTick: () => void;
      metrics?: Pick<IngestorMetrics, 'databaseError'>;
    },
  ) {
    super();
    this.sql = sql;
    this.logger = logger;
    this.instance = options.instance;
    this.timing = options.timing;
    this.onTick = options.onTick;
    this.metrics = options.metrics ?? noMetrics;
  }

  /** Registers the instance (the others hand over their excess at once) and starts the renewals. */
  async start(): Promise<void> {
    this.timer = setInterval(() => void this.tick(), this.timing.tickMs);
    try {
      await announceInstance(this.sql, this.instance, this.timing.ttlMs);
    } catch (err) {
      // The first renewal round registers it as well.
      this.logger[failureLevel(err)]({ err: coerceError(err) }, 'could not register this instance; retrying');
    }
  }

  /** Keys of the leases held. */
  keys(): Set<string> {
    return new Set(this.held.keys());
  }

  tokens(): LeaseToken[] {
    return [...this.held.values()].map((h) => h.token);
  }

  holds(token: LeaseToken): boolean {
    return this.held.get(leaseKey(token.connectionId, token.slot))?.token.epoch === token.epoch;
  }

  /** Keys handed over a moment ago (LeasePlanInput.avoid): for three rounds. */
  recentlyHandedOver(): Set<string> {
    const now = performance.now();
    for (const [key, until] of this.handedOver) if (until <= now) this.handedOver.delete(key);
    return new Set(this.handedOver.keys());
  }

  /** See LeasePlanInput.takeExpired: false for two rounds after this instance's renewals failed. */
  mayTakeExpired(): boolean {
    return !this.failing && performance.now() - this.healthySince >= 2 * this.timing.tickMs;
  }

  handle(token: LeaseToken): SessionLease {
    return {
      token,
      valid: () => this.valid(token),
      confirm: () => this.confirm(token),
      lost: (reason) => this.lose(token, reason),
    };
  }

  /** Takes what the plan says (the database may refuse some: another instance was quicker). */
  async acquire(
    wanted: readonly { connectionId: string; slot: number }[],
    create: readonly { connectionId: string; slot: number }[],
  ): Promise<LeaseToken[]> {
    if (this.stopped) return [];
    const started = performance.now();
    const tokens = await acquireLeases(this.sql, this.instance, this.timing.ttlMs, wanted);
    for (const { connectionId, slot } of create) {
      const token = await createMemberLease(this.sql, this.instance, this.timing.ttlMs, connectionId, slot);
      if (token) tokens.push(token);
    }
    for (const token of tokens) {
      this.held.set(leaseKey(token.connectionId, token.slot), {
        token,
        validUntil: started + LOCAL_VALIDITY * this.timing.ttlMs,
      });
    }
    if (tokens.length > 0)
      this.logger.info({ leases: tokens.map((t) => leaseKey(t.connectionId, t.slot)) }, 'leases acquired');
    return tokens;
  }

  /**
   * Gives leases up (after their sessions stopped): other instances are notified and take them.
   * `handedOver`: to balance the instances, so this one does not take them back for a while.
   */
  async release(
    tokens: readonly LeaseToken[],
    options: { deregister?: boolean; handedOver?: boolean } = {},
  ): Promise<void> {
    const mine = tokens.filter((t) => this.holds(t));
    for (const t of mine) {
      const key = leaseKey(t.connectionId, t.slot);
      this.held.delete(key);
      if (options.handedOver) this.handedOver.set(key, performance.now() + 3 * this.timing.tickMs);
    }
    if (mine.length === 0 && !options.deregister) return;
    try {
      await releaseLeases(this.sql, this.instance, mine, {
        deregister: options.deregister ?? false,
        idleTimeoutMs: this.timing.idleTimeoutMs,
      });
      if (mine.length > 0)
        this.logger.info({ leases: mine.map((t) => leaseKey(t.connectionId, t.slot)) }, 'leases released');
    } catch (err) {
      // They run out by themselves within a lease.
      this.logger[failureLevel(err)](
        { err: coerceError(err), leases: mine.length },
        'could not release leases; they expire within a lease',
      );
    }
  }

  /** Stops renewing; with `release`, gives every lease up and removes this instance's row. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.renewer.current;
    await this.release(this.tokens(), { deregister: true });
    this.renewed.resolve();
  }

  /** One renewal round now (merged with one in progress). */
  renew(): Promise<void> {
    return this.renewer.run();
  }

  private async tick(): Promise<void> {
    await this.renew();
    if (!this.stopped) this.onTick();
  }

  private valid(token: LeaseToken): boolean {
    const h = this.held.get(leaseKey(token.connectionId, token.slot));
    return h !== undefined && h.token.epoch === token.epoch && performance.now() < h.validUntil;
  }

  private async confirm(token: LeaseToken): Promise<boolean> {
    for (;;) {
      if (this.stopped || !this.holds(token)) return false;
      if (this.valid(token)) return true;
      const next = this.renewed.promise;
      void this.renew();
      await next;
      if (this.failing && !this.stopped && this.holds(token) && !this.valid(token)) {
        // The database is away: wait for the next round instead of spinning.
        await new Promise((resolve) => setTimeout(resolve, this.timing.tickMs));
      }
    }
  }

  private lose(token: LeaseToken, reason: string): void {
    if (!this.holds(token)) return;
    this.held.delete(leaseKey(token.connectionId, token.slot));
    this.logger.warn({ lease: leaseKey(token.connectionId, token.slot), epoch: token.epoch }, reason);
    this.emit('lost', token, reason);
  }

  private async renewOnce(): Promise<void> {
    const started = performance.now();
    const tokens = this.tokens();
    try {
      if (this.stopped) return;
      const kept = await renewLeases(this.sql, this.instance, this.timing.ttlMs, tokens);
      if (this.failing) {
        this.failing = false;
        this.healthySince = performance.now();
        this.logger.info('lease renewals work again');
      }
      for (const token of tokens) {
        const key = leaseKey(token.connectionId, token.slot);
        const h = this.held.get(key);
        if (!h || h.token.epoch !== token.epoch) continue;
        if (kept.has(key)) h.validUntil = Math.max(h.validUntil, started + LOCAL_VALIDITY * this.timing.ttlMs);
        else this.lose(token, 'lease lost: another instance took the connection over');
      }
    } catch (err) {
      if (isDatabaseError(err)) this.metrics.databaseError('lease');
      if (!this.failing)
        this.logger[failureLevel(err)](
          { err: coerceError(err), leases: tokens.length },
          'could not renew leases; sessions stop taking messages when they run out, until a renewal works',
        );
      this.failing = true;
    } finally {
      const done = this.renewed;
      this.renewed = deferred();
      done.resolve();
    }
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}
