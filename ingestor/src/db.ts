import postgres, { type Sql } from 'postgres';

export type Db = Sql;

/**
 * The ingestor's one pool. Postgres' bigint ids stay strings (postgres.js' default) so no id is
 * ever rounded; timestamps come back as Dates.
 */
export function createDb(url: string, options: { max?: number; onnotice?: (notice: postgres.Notice) => void } = {}): Db {
  return postgres(url, {
    max: options.max ?? 6,
    // Fail fast when Postgres is away: the writer retries with backoff and stops reading meanwhile.
    connect_timeout: 5,
    idle_timeout: 60,
    onnotice: options.onnotice ?? (() => undefined),
    connection: { application_name: 'bfg-ingestor' },
  });
}

/** SQLSTATE classes and postgres.js codes that mean "the database is unreachable", not "bad data". */
export function isConnectionError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return false;
  return (
    code.startsWith('08') || // connection exception
    code === '57P01' || code === '57P02' || code === '57P03' || // admin shutdown, crash shutdown, cannot connect now
    code === '53300' || // too many connections
    code === 'CONNECTION_CLOSED' || code === 'CONNECTION_ENDED' || code === 'CONNECTION_DESTROYED' ||
    code === 'CONNECT_TIMEOUT' || code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'EPIPE' ||
    code === 'ETIMEDOUT' || code === 'ENOTFOUND' || code === 'EAI_AGAIN'
  );
}
