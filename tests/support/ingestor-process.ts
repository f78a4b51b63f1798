import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from '@bfg/local';
import { makeTempDir } from './temp-dir.ts';
import { waitFor } from './wait-for.ts';

const SETPRIV = '/usr/bin/setpriv';
/** Lines of its stdout (JSON log lines) kept per process, the newest. */
const KEPT_LINES = 5_000;

export interface IngestorProcess {
  readonly instance: string;
  readonly pid: number;
  /** Its JSON log lines so far (BFG_LOG_LEVEL, default info), parsed. */
  readonly lines: readonly Record<string, unknown>[];
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly running: boolean;
  /** Sends a signal (SIGKILL, SIGSTOP, SIGCONT, SIGTERM, …). */
  kill(signal: NodeJS.Signals): void;
  /** SIGTERM, then waits for the exit; resolves with the exit code. */
  stop(): Promise<number | null>;
  /** Waits for a log line whose `msg` matches. */
  waitForLog(msg: RegExp, timeoutMs?: number): Promise<Record<string, unknown>>;
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/**
 * Runs `node ingestor/src/main.ts` as its own process, the way `npm run ingestor` does, for tests
 * that kill, pause or terminate it. Started under `setpriv --pdeathsig SIGKILL` (when there), so a
 * test worker that dies does not leave it behind, not even a SIGSTOPped one. Its connection and
 * parsing log files go to a temp dir removed when the process exits.
 */
export async function spawnIngestor(
  databaseUrl: string,
  instance: string,
  env: Record<string, string> = {},
): Promise<IngestorProcess> {
  const logs = await makeTempDir(`ingestor-${instance}`);
  const program = [path.join(repoRoot, 'ingestor/src/main.ts')];
  const [command, args] = existsSync(SETPRIV)
    ? [SETPRIV, ['--pdeathsig', 'SIGKILL', process.execPath, ...program]]
    : [process.execPath, program];
  const child = spawn(command, args, {
    env: {
      PATH: process.env['PATH'] ?? '',
      DATABASE_URL: databaseUrl,
      BFG_INSTANCE_ID: instance,
      BFG_LOG_DIR: logs.path,
      BFG_LOG_LEVEL: 'info',
      BFG_WORKER: 'false',
      BFG_STATUS_FLUSH_MS: '200',
      BFG_DISCOVERY_FLUSH_MS: '200',
      BFG_RECONNECT_MAX_MS: '1000',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  live.add(child);
  const lines: Record<string, unknown>[] = [];
  let buffered = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    const parts = buffered.split('\n');
    buffered = parts.pop()!;
    for (const part of parts) {
      if (!part.trim()) continue;
      try {
        lines.push(JSON.parse(part) as Record<string, unknown>);
      } catch {
        lines.push({ msg: part });
      }
      if (lines.length > KEPT_LINES) lines.shift();
    }
  });
  let running = true;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      running = false;
      live.delete(child);
      void logs.remove();
      resolve({ code, signal });
    });
  });
  return {
    instance,
    pid: child.pid!,
    lines,
    exited,
    get running() {
      return running;
    },
    kill(signal) {
      if (running) child.kill(signal);
    },
    async stop() {
      if (!running) return (await exited).code;
      child.kill('SIGCONT');
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      const { code } = await exited;
      clearTimeout(timer);
      return code;
    },
    waitForLog(msg, timeoutMs = 20_000) {
      return waitFor(`${instance} to log ${String(msg)}`, () => lines.find((l) => msg.test(String(l['msg']))), {
        timeoutMs,
      }) as Promise<Record<string, unknown>>;
    },
  };
}
