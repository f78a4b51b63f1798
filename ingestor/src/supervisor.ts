import { EventEmitter } from 'node:events';
import { BrokerSession, type SessionDeps } from './broker-session.ts';
import { settingsFingerprint } from './broker-options.ts';
import { BrokerSubscriptions } from './broker-subscriptions.ts';
import type { Db } from './db.ts';
import type { ObservedConnection } from './health.ts';
import {
  loadActiveConnections,
  loadActivePatterns,
  recordSessionFilters,
  type ConnectionRow,
} from './sql/connections.ts';

export interface SupervisorEvents {
  reconciled: [{ started: string[]; stopped: string[]; restarted: string[] }];
}

/**
 * Keeps one BrokerSession per `mqtt_connection` row with `is_active = true`: the table is the
 * truth, `reconcile()` makes the live sessions match it (connect missing, end deactivated or
 * deleted, restart on changed settings or secrets; changed topic patterns, filters and share
 * group are applied in place). It is idempotent; the control loop makes sure only one runs at a time.
 */
export class Supervisor extends EventEmitter<SupervisorEvents> {
  private readonly sessions = new Map<string, BrokerSession>();
  private readonly sql: Db;

  private readonly deps: SessionDeps;
  /** When a reconcile last succeeded (undefined until the first one). */
  lastReconciledAt: Date | undefined;

  constructor(sql: Db, deps: SessionDeps) {
    super();
    this.sql = sql;
    this.deps = deps;
  }

  get size(): number {
    return this.sessions.size;
  }

  session(id: string): BrokerSession | undefined {
    return this.sessions.get(id);
  }

  /** The state of every session, i.e. of each connection the table wanted active at the last reconcile. */
  observed(): ObservedConnection[] {
    return [...this.sessions.values()].map((s) => s.observed);
  }

  async reconcile(): Promise<void> {
    const rows = await loadActiveConnections(this.sql);
    const patterns = await loadActivePatterns(
      this.sql,
      rows.map((r) => r.id),
    );
    const wanted = new Map(rows.map((r) => [r.id, r]));
    const started: string[] = [];
    const stopped: string[] = [];
    const restarted: string[] = [];

    for (const [id, session] of this.sessions) {
      if (wanted.has(id)) continue;
      this.sessions.delete(id);
      await session.stop('stopped: the connection is no longer active');
      stopped.push(id);
    }
    for (const row of rows) {
      const existing = this.sessions.get(row.id);
      const rowPatterns = patterns.get(row.id) ?? [];
      if (existing && existing.fingerprint === settingsFingerprint(row)) {
        existing.update(row, rowPatterns);
        continue;
      }
      if (existing) {
        await existing.stop('restarting with changed settings', false);
        restarted.push(row.id);
      } else {
        started.push(row.id);
      }
      // A restarted session takes over what its predecessor knew of the broker session, which is
      // newer than the row's session_filters when a write of it is still under way.
      const subscriptions = existing?.subscriptions.forNewClient() ?? this.subscriptionsOf(row);
      const session = new BrokerSession(row, rowPatterns, this.deps, subscriptions);
      this.sessions.set(row.id, session);
      session.start();
    }
    this.lastReconciledAt = new Date();
    this.emit('reconciled', { started, stopped, restarted });
  }

  private subscriptionsOf(row: ConnectionRow): BrokerSubscriptions {
    return new BrokerSubscriptions(row.sessionFilters, (filters) => recordSessionFilters(this.sql, row.id, filters));
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
