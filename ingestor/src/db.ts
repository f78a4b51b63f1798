import postgres, { type Sql } from 'postgres';

export type Db = Sql;

/**
 * The ingestor's one pool. Postgres' bigint ids stay strings (postgres.js' default) so no id is
 * ever rounded; timestamps come back as Dates.
 */
export function createDb(
  url: string,
  options: { max?: number; onnotice?: (notice: postgres.Notice) => void } = {},
): Db {
  return postgres(url, {
    max: options.max ?? 6,
    // Fail fast when Postgres is away: the writer retries with backoff and stops reading meanwhile.
    connect_timeout: 5,
    backoff: reconnectDelayS,
    idle_timeout: 60,
    onnotice: options.onnotice ?? (() => undefined),
    connection: { application_name: 'bfg-ingestor' },
  });
}

/** Reconnects wait at most this long once Postgres is back, however long it was away. */
const MAX_RECONNECT_DELAY_S = 1;

/**
 * Seconds postgres.js waits before reconnecting a connection that closed with an error. Its
 * default is 3^n/100 s up to 20 s, with n counted across the whole pool and reset only by a
 * successful connect: through an outage of a few seconds n climbs past 6, so once Postgres is back
 * every connection still sleeps for up to 20 s. The pending writes then wait for it, and so did a
 * shutdown (its final writes, then `sql.end()` until its timeout). Pacing retries is the job of
 * the writer's and the flushers' own loops (one owner per retry loop), so the cap is short; it
 * stays above zero because postgres.js re-LISTENs by itself on every close of the LISTEN
 * connection, which would otherwise spin against a database that is down. Same jitter as the
 * default, so the connections do not all come back in the same instant.
 */
function reconnectDelayS(retries: number): number {
  return (0.5 + Math.random() / 2) * Math.min(3 ** retries / 100, MAX_RECONNECT_DELAY_S);
}

/** SQLSTATE classes and postgres.js codes that mean "the database is unreachable", not "bad data". */
export function isConnectionError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return false;
  return (
    code.startsWith('08') || // connection exception
    code === '57P01' ||
    code === '57P02' ||
    code === '57P03' || // admin shutdown, crash shutdown, cannot connect now
    code === '53300' || // too many connections
    code === 'CONNECTION_CLOSED' ||
    code === 'CONNECTION_ENDED' ||
    code === 'CONNECTION_DESTROYED' ||
    code === 'CONNECT_TIMEOUT' ||
    code === 'ECONNREFUSED' ||
    code === 'ECONNRESET' ||
    code === 'EPIPE' ||
    code === 'ETIMEDOUT' ||
    code === 'ENOTFOUND' ||
    code === 'EAI_AGAIN'
  );
}

/**
 * The level at which to log a failed database operation that will be retried: Postgres being away
 * is expected (warn); anything else — a query the schema refuses, a bug — is unexpected (error,
 * which goes to Sentry when SENTRY_DSN is set).
 */
export function failureLevel(err: unknown): 'warn' | 'error' {
  return isConnectionError(err) ? 'warn' : 'error';
}

/** An error Postgres sent, or a failure to reach it (not, say, a bug in our own code). */
export function isDatabaseError(err: unknown): boolean {
  return err instanceof postgres.PostgresError || isConnectionError(err);
}
