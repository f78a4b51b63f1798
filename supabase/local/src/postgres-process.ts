import { spawn, type ChildProcess } from 'node:child_process';
import readline from 'node:readline';
import { coerceError } from './errors.ts';
import type { PostgresBinaries } from './postgres-binaries.ts';
import type { ServerUser } from './server-user.ts';

/** Messages in English whatever the machine's locale: start-up waits for, and explains by, their text. */
const ENV = { ...process.env, LC_MESSAGES: 'C', LC_ALL: 'C' };

interface SpawnOptions {
  /** Run as this user (we are root) or, when null, as ourselves. */
  user: ServerUser | null;
  /** Every line the process writes (stdout and stderr). */
  onLine: (line: string) => void;
}

function start(file: string, args: string[], options: SpawnOptions): ChildProcess {
  const ids = options.user ? { uid: options.user.uid, gid: options.user.gid } : {};
  const child = spawn(file, args, { ...ids, env: ENV, stdio: ['ignore', 'pipe', 'pipe'] });
  for (const stream of [child.stdout, child.stderr]) {
    if (stream) readline.createInterface({ input: stream }).on('line', options.onLine);
  }
  return child;
}

/** Resolves once the process has exited; a failure to start at all (EACCES, ENOENT) rejects. */
function exited(child: ChildProcess, what: string): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve, reject) => {
    child.once('error', (err) => reject(new Error(`cannot run ${what}: ${coerceError(err).message}`, { cause: err })));
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
}

/** `initdb` into the (empty, owned by the server's user) data directory, superuser `postgres`. */
export async function runInitdb(
  binaries: PostgresBinaries,
  options: SpawnOptions & { dataDir: string; passwordFile: string; flags: string[] },
): Promise<void> {
  const child = start(
    binaries.initdb,
    [
      `--pgdata=${options.dataDir}`,
      '--auth=scram-sha-256',
      '--username=postgres',
      `--pwfile=${options.passwordFile}`,
      '--lc-messages=C',
      ...options.flags,
    ],
    options,
  );
  const { code, signal } = await exited(child, 'initdb');
  if (code !== 0) throw new Error(`initdb failed (${signal ?? `exit code ${code}`})`);
}

export interface PostgresProcess {
  /** Fast shutdown (SIGINT); immediate (SIGQUIT) if it is still there after `timeoutMs`. */
  stop(timeoutMs?: number): Promise<void>;
}

/** Every server this process runs, so that leaving (however we leave) stops them too. */
const running = new Set<ChildProcess>();
process.on('exit', () => {
  // Only a synchronous signal is possible here; Postgres then shuts down on its own.
  for (const child of running) child.kill('SIGINT');
});

/** Starts the server; resolves once it is ready to accept connections, rejects if it exits first. */
export async function runPostgres(
  binaries: PostgresBinaries,
  options: SpawnOptions & { dataDir: string; port: number; flags: string[] },
): Promise<PostgresProcess> {
  let ready!: () => void;
  const isReady = new Promise<void>((resolve) => (ready = resolve));
  const child = start(binaries.postgres, ['-D', options.dataDir, '-p', String(options.port), ...options.flags], {
    ...options,
    onLine: (line) => {
      options.onLine(line);
      if (line.includes('database system is ready to accept connections')) ready();
    },
  });
  running.add(child);
  const done = exited(child, 'postgres').finally(() => running.delete(child));
  const early = done.then(({ code, signal }) => {
    throw new Error(`postgres exited during start-up (${signal ?? `exit code ${code}`})`);
  });
  await Promise.race([isReady, early]);
  // From here an exit is reported by the connections that break, not by a rejection nobody awaits.
  early.catch(() => undefined);

  return {
    async stop(timeoutMs = 30_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGINT');
      const timer = setTimeout(() => child.kill('SIGQUIT'), timeoutMs);
      await done.catch(() => undefined);
      clearTimeout(timer);
    },
  };
}
