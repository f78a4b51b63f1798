import type { Db } from './db.ts';
import { coerceError } from './errors.ts';
import type { ConnectionStatus } from './vocabulary.ts';

/** How long `/healthz` waits for Postgres to answer `select 1`. */
const DATABASE_TIMEOUT_MS = 2_000;

/** What this process knows of one connection it runs (BrokerSession). */
export interface ObservedConnection {
  id: string;
  site: string;
  status: ConnectionStatus;
  detail: string | null;
  /** When it last stopped being connected (or its session started); undefined while connected. */
  notConnectedSince: Date | undefined;
}

export type DatabaseHealth = { reachable: true } | { reachable: false; error: string };

export interface HealthInput {
  database: DatabaseHealth;
  connections: readonly ObservedConnection[];
  /** When the control loop last made the sessions match the table (undefined: not yet). */
  lastReconcileAt: Date | undefined;
  startedAt: Date;
  stopping: boolean;
}

/** The body of `/healthz` (snake_case, as the table's columns). */
export interface HealthReport {
  healthy: boolean;
  stopping: boolean;
  database: DatabaseHealth;
  reconcile: { ok: boolean; last_success_at: string | null };
  connections: {
    active: number;
    unhealthy: {
      id: string;
      site: string;
      status: ConnectionStatus;
      status_detail: string | null;
      not_connected_since: string;
    }[];
  };
}

/**
 * Healthy = Postgres answers, the control loop reconciled within a sweep (+ grace), and every
 * connection the table wants active is connected — except one that has not been connected for
 * less than `graceMs` (it just became active, was restarted with new settings, or lost its broker
 * a moment ago: MQTT.js and the backoff get that long to bring it back).
 */
export function assessHealth(
  input: HealthInput,
  now: Date,
  options: { graceMs: number; sweepMs: number },
): HealthReport {
  const unhealthy = input.connections
    .filter((c) => c.notConnectedSince && now.getTime() - c.notConnectedSince.getTime() >= options.graceMs)
    .map((c) => ({
      id: c.id,
      site: c.site,
      status: c.status,
      status_detail: c.detail,
      not_connected_since: c.notConnectedSince!.toISOString(),
    }));
  const reconciledAt = input.lastReconcileAt ?? input.startedAt;
  const reconcileOk = now.getTime() - reconciledAt.getTime() <= options.sweepMs + options.graceMs;
  return {
    healthy: !input.stopping && input.database.reachable && reconcileOk && unhealthy.length === 0,
    stopping: input.stopping,
    database: input.database,
    reconcile: { ok: reconcileOk, last_success_at: input.lastReconcileAt?.toISOString() ?? null },
    connections: { active: input.connections.length, unhealthy },
  };
}

/** A cheap round trip on the ingestor's pool, given up after DATABASE_TIMEOUT_MS. */
export async function checkDatabase(sql: Db): Promise<DatabaseHealth> {
  let timer: NodeJS.Timeout | undefined;
  const query = sql`select 1`.execute();
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no answer to select 1 within ${DATABASE_TIMEOUT_MS} ms`)),
      DATABASE_TIMEOUT_MS,
    );
  });
  try {
    await Promise.race([query, timeout]);
    return { reachable: true };
  } catch (err) {
    // The query may still fail after the timeout won.
    query.catch(() => undefined);
    return { reachable: false, error: coerceError(err).message };
  } finally {
    clearTimeout(timer);
  }
}
