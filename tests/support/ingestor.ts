import path from 'node:path';
import pino from 'pino';
import type { Sql } from 'postgres';
import { createIngestor, loadIngestorConfig, type Ingestor } from '@bfg/ingestor';
import { makeTempDir } from './temp-dir.ts';
import { waitFor } from './wait-for.ts';

export interface RunningIngestor {
  ingestor: Ingestor;
  logDir: string;
  stop(): Promise<void>;
}

/** Starts the ingestor in-process against `databaseUrl`, logging to a temp dir; `env` overrides settings. */
export async function startIngestor(databaseUrl: string, env: Record<string, string> = {}): Promise<RunningIngestor> {
  const dir = await makeTempDir('ingestor-logs');
  const config = loadIngestorConfig({
    DATABASE_URL: databaseUrl,
    BFG_LOG_DIR: dir.path,
    BFG_INSTANCE_ID: 'test-ingestor',
    BFG_STATUS_FLUSH_MS: '200',
    BFG_DISCOVERY_FLUSH_MS: '200',
    BFG_RECONNECT_MAX_MS: '1000',
    // Jobs (replays, staleness, retention) would change what other tests look at; their tests turn them on.
    BFG_WORKER: 'false',
    ...env,
  });
  const logger = pino({ level: process.env['BFG_TEST_LOG_LEVEL'] ?? 'silent' });
  const ingestor = createIngestor(config, logger);
  await ingestor.start();
  return {
    ingestor,
    logDir: path.join(dir.path),
    async stop() {
      await ingestor.stop();
      await dir.remove();
    },
  };
}

export interface ConnectionState {
  status: string;
  statusDetail: string | null;
}

export async function connectionState(sql: Sql, id: string): Promise<ConnectionState> {
  const [row] = await sql<
    ConnectionState[]
  >`select status, status_detail as "statusDetail" from mqtt_connection where id = ${id}`;
  if (!row) throw new Error(`no connection ${id}`);
  return row;
}

/** Waits until the connection's observed status is `status` (and its detail matches, if given). */
export function waitForStatus(
  sql: Sql,
  id: string,
  status: string,
  options: { detail?: RegExp; timeoutMs?: number } = {},
) {
  return waitFor(
    `connection ${id} to be ${status}${options.detail ? ` (${String(options.detail)})` : ''}`,
    () => connectionState(sql, id),
    {
      timeoutMs: options.timeoutMs ?? 10_000,
      accept: (s) => s.status === status && (!options.detail || options.detail.test(s.statusDetail ?? '')),
    },
  );
}
