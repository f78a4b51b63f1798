import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { parseEnv } from './env.ts';

const ms = (fallback: number) => z.coerce.number().int().min(1).default(fallback);
const count = (fallback: number) => z.coerce.number().int().min(1).default(fallback);

export const envSchema = z.object({
  /** Postgres to ingest into, as a role that bypasses RLS (Supabase: the `postgres` connection string). */
  DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/ }),
  /**
   * Names this process in mqtt_connection_log, the logs and the leases it holds
   * (mqtt_connection.owner_instance). Unique per running instance.
   */
  BFG_INSTANCE_ID: z.string().min(1).max(100).default(`${os.hostname()}-${process.pid}`),
  /**
   * Connection leases (several instances share the work): when an instance dies, another takes its
   * connections over within this many seconds. A lease lasts 0.6 of it and is renewed every 0.2 of
   * it (leases.ts says why); every instance of a deployment should use the same value.
   */
  BFG_LEASE_TAKEOVER_S: z.coerce.number().min(2).max(600).default(15),
  /** Full reconcile of broker connections, besides the one each NOTIFY triggers. */
  BFG_SWEEP_INTERVAL_MS: ms(30_000),
  /** Longest wait between reconnect attempts to a failing broker (capped exponential backoff). */
  BFG_RECONNECT_MAX_MS: ms(30_000),
  /** Where the connection and parsing log files go (rotated daily and at 10 MB, 14 kept). */
  BFG_LOG_DIR: z.string().min(1).default(path.resolve('logs')),
  BFG_LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  /** Payloads above this size are not parsed (kind too_large). */
  BFG_MAX_PAYLOAD_BYTES: count(256 * 1024),
  /** A batch is written when it holds this many messages… */
  BFG_BATCH_MAX_MESSAGES: count(5_000),
  /** …or when its first message has waited this long. */
  BFG_BATCH_MAX_WAIT_MS: ms(50),
  /** Messages held in memory (waiting for a commit) before the ingestor stops reading from brokers. */
  BFG_MAX_PENDING_MESSAGES: count(50_000),
  /**
   * Bytes those messages may take, at most, before the ingestor stops reading from brokers: what
   * bounds its memory (a message holds ~1.7 KB with 4 readings, ~9 KB with 50; see heldBytes in
   * message-pipeline.ts). The default holds ~7,600 such messages: two batches of ~3,800 being
   * written. 16 MiB drained no faster and peaked at ~200 MB of resident memory instead of ~190
   * (README, Benchmark).
   */
  BFG_MAX_PENDING_BYTES: count(12 * 1024 * 1024),
  /** How often discovered-topic aggregates are written. */
  BFG_DISCOVERY_FLUSH_MS: ms(2_000),
  /** Distinct topics held between discovery writes; more triggers an early write. */
  BFG_DISCOVERY_MAX_TOPICS: count(20_000),
  /** How often last_message_at is written (it is not written per message). */
  BFG_STATUS_FLUSH_MS: ms(5_000),
  /** Keep messages no pattern accepted in mqtt_message_archive (for replay when a pattern is added). */
  BFG_ARCHIVE_UNMATCHED: z
    .enum(['true', 'false'])
    .default('true')
    .transform((value) => value === 'true'),
  /** Receive Maximum sent to MQTT 5 brokers: how many QoS 1 messages may await our PUBACK. */
  BFG_MQTT_RECEIVE_MAXIMUM: z.coerce.number().int().min(1).max(65535).default(10_000),
  /**
   * Realtime broadcast messages per second per site, at most (Supabase meters every message to
   * every subscriber): changes within 1/rate s of the last message wait for the next one, which
   * carries their latest state. Fractions allowed (0.5 = one message every 2 s).
   */
  BFG_REALTIME_MAX_RATE: z.coerce.number().min(0.1).max(100).default(4),
  /**
   * Port of the HTTP server with /healthz and /metrics; unset, there is none. 0 takes any free
   * port (logged at start).
   */
  BFG_HTTP_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  /**
   * Address the HTTP server listens on. Loopback by default, so a local run exposes nothing; in a
   * container set 0.0.0.0 so that the health check and Prometheus can reach it.
   */
  BFG_HTTP_HOST: z.string().min(1).default('127.0.0.1'),
  /**
   * Seconds an active connection may be not connected (just activated, restarted with new
   * settings, or its broker just lost) before /healthz counts it as unhealthy.
   */
  BFG_HEALTH_GRACE_S: z.coerce.number().min(0).default(30),
  /** Report unexpected errors (and uncaught exceptions) to Sentry; unset, nothing is sent. */
  SENTRY_DSN: z.url({ protocol: /^https?$/ }).optional(),
  /** Sentry's environment tag (e.g. production, staging); Sentry's default when unset. */
  SENTRY_ENVIRONMENT: z.string().min(1).max(64).optional(),
  /** Run graphile-worker's jobs (replays, retention, staleness) in this process; `npm run worker` runs them alone. */
  BFG_WORKER: z
    .enum(['true', 'false'])
    .default('true')
    .transform((value) => value === 'true'),
  /** Jobs one worker process runs at once. */
  BFG_WORKER_CONCURRENCY: z.coerce.number().int().min(1).max(32).default(2),
  /** Archived messages replayed per transaction by a backfill. */
  BFG_BACKFILL_BATCH: count(1_000),
  /** How often devices that stopped reporting are marked offline. */
  BFG_STALENESS_INTERVAL_S: z.coerce.number().int().min(1).default(30),
  /** Readings older than this many days are dropped by whole monthly partitions; unset keeps everything. */
  BFG_READING_RETENTION_DAYS: z.coerce.number().int().min(1).optional(),
  /** Five-minute rollups older than this many days are deleted; unset keeps them (also past the readings). */
  BFG_ROLLUP_RETENTION_DAYS: z.coerce.number().int().min(1).optional(),
  /** Connection and parsing log rows older than this many days are pruned. */
  BFG_LOG_RETENTION_DAYS: z.coerce.number().int().min(1).default(30),
  /** Archived (unmatched) messages older than this many days are pruned. */
  BFG_ARCHIVE_RETENTION_DAYS: z.coerce.number().int().min(1).default(7),
  /** Archived messages kept per connection at most; the oldest go first. */
  BFG_ARCHIVE_MAX_ROWS: count(100_000),
});

export type IngestorConfig = Readonly<z.infer<typeof envSchema>>;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Parses the environment once (see parseEnv: one message for every bad variable, no values). */
export function loadIngestorConfig(env: NodeJS.ProcessEnv = process.env): IngestorConfig {
  return Object.freeze(parseEnv(envSchema, env, (message) => new ConfigError(message)));
}
