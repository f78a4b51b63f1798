import { spawn } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import path from 'node:path';
import { getFreePort, repoRoot } from '@bfg/local';
import { INGESTOR_NODE_FLAGS } from '../../../ingestor/src/heap-flags.ts';
import { makeTempDir } from '../../support/temp-dir.ts';

export interface BenchIngestor {
  readonly pid: number;
  /** The ingestor's write transactions so far, from its /metrics (undefined if unreachable). */
  writeStats(): Promise<{ batches: number; messages: number; commitSeconds: number } | undefined>;
  /** The V8 heap (used, total by space) and external memory now, in MB, from its /metrics. */
  memory(): Promise<Record<string, number> | undefined>;
  /** SIGTERM, then waits for the exit (the ingestor writes and acknowledges what it holds first). */
  stop(): Promise<void>;
}

/**
 * The ingestor as deployed: its own process (`ingestor/src/main.ts`, with its heap flags), its HTTP server on a free port
 * for /metrics, logs at warn. BENCH_NODE_ARGS go to node (e.g. --cpu-prof), BENCH_INGESTOR_ENV
 * ("NAME=value NAME=value") to its environment.
 */
export async function startBenchIngestor(
  databaseUrl: string,
  env: Record<string, string> = {},
): Promise<BenchIngestor> {
  const nodeArgs = (process.env['BENCH_NODE_ARGS'] ?? '').split(' ').filter(Boolean);
  const extra = Object.fromEntries(
    (process.env['BENCH_INGESTOR_ENV'] ?? '')
      .split(' ')
      .filter(Boolean)
      .map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)]),
  );
  const logs = await makeTempDir('bench-ingestor-logs');
  const port = await getFreePort();
  const child = spawn(
    process.execPath,
    [...INGESTOR_NODE_FLAGS, ...nodeArgs, path.join(repoRoot, 'ingestor/src/main.ts')],
    {
      env: {
        ...process.env,
        DATABASE_URL: databaseUrl,
        BFG_LOG_DIR: logs.path,
        BFG_LOG_LEVEL: 'warn',
        BFG_HTTP_PORT: String(port),
        ...extra,
        ...env,
      },
      // BENCH_INGESTOR_STDOUT=<file> keeps its stdout (e.g. with BENCH_NODE_ARGS=--trace-gc).
      stdio: ['ignore', process.env['BENCH_INGESTOR_STDOUT'] ? 'pipe' : 'ignore', 'inherit'],
    },
  );
  const stdoutFile = process.env['BENCH_INGESTOR_STDOUT'];
  if (stdoutFile) child.stdout?.on('data', (chunk: Buffer) => appendFileSync(stdoutFile, chunk));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    pid: child.pid!,
    async writeStats() {
      try {
        const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
        return {
          batches: value('bfg_batch_messages_count'),
          messages: value('bfg_batch_messages_sum'),
          commitSeconds: value('bfg_batch_commit_seconds_sum'),
        };
      } catch {
        return undefined;
      }
    },
    async memory() {
      try {
        const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        const mb = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN) / 1048576;
        const out: Record<string, number> = {
          heapUsed: mb(/^nodejs_heap_size_used_bytes (\S+)$/m),
          heapTotal: mb(/^nodejs_heap_size_total_bytes (\S+)$/m),
          external: mb(/^nodejs_external_memory_bytes (\S+)$/m),
          pending: mb(/^bfg_pending_bytes (\S+)$/m),
          pendingMessages: Number(/^bfg_pending_messages (\S+)$/m.exec(text)?.[1] ?? NaN),
        };
        for (const [, space, bytes] of text.matchAll(/^nodejs_heap_space_size_total_bytes\{space="(\w+)"\} (\S+)$/gm))
          out[`total:${space}`] = Number(bytes) / 1048576;
        return out;
      } catch {
        return undefined;
      }
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
      await logs.remove();
    },
  };
}
