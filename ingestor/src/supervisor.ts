import { EventEmitter } from 'node:events';
import { BrokerSession, type SessionDeps } from './broker-session.ts';
import { settingsFingerprint } from './broker-options.ts';
import { BrokerSubscriptions } from './broker-subscriptions.ts';
import type { Db } from './db.ts';
import { coerceError } from './errors.ts';
import type { ObservedConnection } from './health.ts';
import { planLeases } from './lease-plan.ts';
import { leaseKey, type Leases, type LeaseToken } from './leases.ts';
import {
  loadActiveConnections,
  loadActivePatterns,
  loadMemberSessionFilters,
  recordSessionFilters,
  type ConnectionRow,
} from './sql/connections.ts';
import { loadLeaseState } from './sql/leases.ts';

export interface SupervisorEvents {
  reconciled: [{ started: string[]; stopped: string[]; restarted: string[] }];
}

/**
 * Keeps one BrokerSession per lease this instance holds (leases.ts): the connections with
 * `is_active = true` it owns, and the member sessions it holds of shared connections. The table is
 * the truth; `reconcile()` first takes and hands over leases by the plan every instance follows
 * (lease-plan.ts), then makes the live sessions match: connect what is held, end what is no
 * longer active or held (writing and acknowledging what it has, then releasing the lease),
 * restart on changed settings or secrets; changed topic patterns, filters and share group are
 * applied in place. It is idempotent; the control loop makes sure only one runs at a time.
 * A lease found lost (a renewal, or a write the database fenced off) ends its session at once,
 * without acknowledging anything more (`BrokerSession.fence`).
 */
export class Supervisor extends EventEmitter<SupervisorEvents> {
  /** By leaseKey (connection id / slot). */
  private readonly sessions = new Map<string, BrokerSession>();
  private readonly sql: Db;
  private readonly leases: Leases;

  private readonly deps: SessionDeps;
  /** When a reconcile last succeeded (undefined until the first one). */
  lastReconciledAt: Date | undefined;

  constructor(sql: Db, deps: SessionDeps, leases: Leases) {
    super();
    this.sql = sql;
    this.deps = deps;
    this.leases = leases;
    leases.on('lost', (token, reason) => void this.fence(token, reason));
  }

  get size(): number {
    return this.sessions.size;
  }

  /** The session of a connection (its own, slot 0, unless a member slot is given). */
  session(id: string, slot = 0): BrokerSession | undefined {
    return this.sessions.get(leaseKey(id, slot));
  }

  /** The state of every session, i.e. of each connection (or member) this instance holds. */
  observed(): ObservedConnection[] {
    return [...this.sessions.values()].map((s) => s.observed);
  }

  async reconcile(): Promise<void> {
    // Leases first: hand over what is more than a fair share, take free ones up to it.
    const state = await loadLeaseState(this.sql);
    const plan = planLeases({
      me: this.leases.instance,
      units: state.units,
      live: state.live,
      held: this.leases.keys(),
      takeExpired: this.leases.mayTakeExpired(),
      avoid: this.leases.recentlyHandedOver(),
    });
    const stopped: string[] = [];
    for (const key of plan.shed) {
      const session = this.sessions.get(key);
      const token = this.leases.tokens().find((t) => leaseKey(t.connectionId, t.slot) === key);
      if (session) {
        this.sessions.delete(key);
        await this.retire(session, 'handed over: another instance has room for it', true);
        stopped.push(key);
      } else if (token) {
        await this.leases.release([token], { handedOver: true });
      }
    }
    await this.leases.acquire(plan.acquire, plan.create);

    // Then the sessions, from rows read after the acquisitions (a previous owner's last writes
    // of session_filters are in them).
    const rows = await loadActiveConnections(this.sql);
    const memberFilters = await loadMemberSessionFilters(this.sql);
    const byId = new Map(rows.map((r) => [r.id, r]));
    const held = this.leases.tokens().filter((t) => byId.has(t.connectionId));
    const patterns = await loadActivePatterns(this.sql, [...new Set(held.map((t) => t.connectionId))]);
    const started: string[] = [];
    const restarted: string[] = [];

    for (const [key, session] of this.sessions) {
      if (this.leases.holds(session.lease.token) && byId.has(session.id)) continue;
      this.sessions.delete(key);
      await this.retire(session, 'stopped: the connection is no longer active');
      stopped.push(key);
    }
    // Taken, but deactivated meanwhile.
    await this.leases.release(this.leases.tokens().filter((t) => !byId.has(t.connectionId)));

    for (const token of held) {
      const key = leaseKey(token.connectionId, token.slot);
      const row = sessionRow(byId.get(token.connectionId)!, token.slot, memberFilters.get(key) ?? []);
      const rowPatterns = patterns.get(row.id) ?? [];
      const existing = this.sessions.get(key);
      if (existing && existing.lease.token.epoch === token.epoch && existing.fingerprint === settingsFingerprint(row)) {
        existing.update(row, rowPatterns);
        continue;
      }
      if (existing) {
        await existing.stop('restarting with changed settings', false);
        restarted.push(key);
      } else {
        started.push(key);
      }
      // A restarted session takes over what its predecessor knew of the broker session, which is
      // newer than the row's session_filters when a write of it is still under way.
      const subscriptions =
        existing?.lease.token.epoch === token.epoch
          ? existing.subscriptions.forNewClient()
          : this.subscriptionsOf(row, token);
      const session = new BrokerSession(row, rowPatterns, this.deps, subscriptions, this.leases.handle(token));
      this.sessions.set(key, session);
      session.start();
    }
    this.lastReconciledAt = new Date();
    this.emit('reconciled', { started, stopped, restarted });
  }

  private subscriptionsOf(row: ConnectionRow, token: LeaseToken): BrokerSubscriptions {
    return new BrokerSubscriptions(row.sessionFilters, (filters) =>
      recordSessionFilters(this.sql, token, this.leases.instance, filters),
    );
  }

  /**
   * Ends a session this instance gives up (deactivated, or handed over): what it took is written
   * and acknowledged, it disconnects cleanly, says so in its status, and only then is the lease
   * released, so the next owner starts after the last commit.
   */
  private async retire(session: BrokerSession, detail: string, handedOver = false): Promise<void> {
    await session.drain();
    await session.stop(detail);
    await this.deps.reporter.flush();
    await this.leases.release([session.lease.token], { handedOver });
  }

  /** The lease went to another instance: end the session without acknowledging anything more. */
  private async fence(token: LeaseToken, reason: string): Promise<void> {
    const key = leaseKey(token.connectionId, token.slot);
    const session = this.sessions.get(key);
    if (!session || session.lease.token.epoch !== token.epoch) return;
    this.sessions.delete(key);
    try {
      await session.fence(reason);
    } catch (err) {
      this.deps.logger.error({ err: coerceError(err), lease: key }, 'could not close a fenced session');
    }
  }

  /** Stops reading from every broker (shutdown, first step). */
  pauseAll(): void {
    for (const session of this.sessions.values()) session.pause();
  }

  async stopAll(detail: string): Promise<void> {
    const sessions = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(sessions.map((s) => s.stop(detail)));
  }
}

/**
 * The row a session follows: the connection's own for slot 0; for member `slot` of a shared
 * connection its own client id (`<client_id>-<slot>`, a broker session of its own) and
 * session_filters — and no filters once the connection is no longer shared (the member then
 * unsubscribes and drains what its broker session still holds).
 */
function sessionRow(row: ConnectionRow, slot: number, memberFilters: string[]): ConnectionRow {
  if (slot === 0) return row;
  return {
    ...row,
    clientId: `${row.clientId}-${slot}`,
    sessionFilters: memberFilters,
    subscribeFilters: row.shareGroup === null ? [] : row.subscribeFilters,
  };
}
