import { BatchWriter } from './batch-writer.ts';
import type { IngestorConfig } from './config.ts';
import { ControlLoop } from './control-loop.ts';
import { createDb, type Db } from './db.ts';
import { DiscoveryAggregator } from './discovery.ts';
import { coerceError } from './errors.ts';
import { assessHealth, checkDatabase } from './health.ts';
import { startHttpServer, type RunningHttpServer } from './http-server.ts';
import { Leases, leaseTiming } from './leases.ts';
import { createFileLogger, flushLogger, type Logger } from './logger.ts';
import { noMetrics, PrometheusMetrics, type IngestorMetrics } from './metrics.ts';
import { defaultParserRegistry, type ParserRegistry } from './parsers/registry.ts';
import { SiteChangeBroadcaster } from './site-change-broadcaster.ts';
import { holdLeases } from './sql/leases.ts';
import { StatusReporter } from './status-reporter.ts';
import { createJobService } from './jobs/service.ts';
import { Supervisor } from './supervisor.ts';

export interface Ingestor {
  readonly sql: Db;
  readonly supervisor: Supervisor;
  readonly writer: BatchWriter;
  readonly controlLoop: ControlLoop;
  readonly leases: Leases;
  /** Where /healthz and /metrics are served once started (undefined when BFG_HTTP_PORT is unset). */
  readonly httpAddress: { host: string; port: number } | undefined;
  start(): Promise<void>;
  /**
   * Graceful stop: stop reading from brokers, write (and acknowledge) what was received, end the
   * broker clients, flush discovery and status, release the leases (other instances take the
   * connections at once), close the pool.
   */
  stop(): Promise<void>;
}

/** Wires the ingestor's parts; `main.ts` adds the process concerns (env, signals, exit codes). */
export function createIngestor(
  config: IngestorConfig,
  logger: Logger,
  options: { registry?: ParserRegistry } = {},
): Ingestor {
  const sql = createDb(config.DATABASE_URL);
  // Metrics are kept only when something can read them (the HTTP server is on).
  const prometheus =
    config.BFG_HTTP_PORT === undefined
      ? undefined
      : new PrometheusMetrics({
          pendingMessages: (): number => writer.pending,
          pendingBytes: (): number => writer.pendingBytes,
        });
  const metrics: IngestorMetrics = prometheus ?? noMetrics;
  const connectionFile = createFileLogger(config.BFG_LOG_DIR, 'connections', 'info');
  const timing = leaseTiming(config.BFG_LEASE_TAKEOVER_S);
  const leases = new Leases(sql, logger.child({ component: 'leases' }), {
    instance: config.BFG_INSTANCE_ID,
    timing,
    onTick: () => void controlLoop.request('lease round'),
    metrics,
  });
  const parsingFile = createFileLogger(config.BFG_LOG_DIR, 'parsing', 'info');
  const writer = new BatchWriter(sql, logger.child({ component: 'writer' }), {
    maxBatchMessages: config.BFG_BATCH_MAX_MESSAGES,
    maxWaitMs: config.BFG_BATCH_MAX_WAIT_MS,
    maxPending: config.BFG_MAX_PENDING_MESSAGES,
    maxPendingBytes: config.BFG_MAX_PENDING_BYTES,
    maxRetryDelayMs: 5_000,
    metrics,
    fence: (tx, tokens) => holdLeases(tx, config.BFG_INSTANCE_ID, tokens, timing.idleTimeoutMs),
    onParsingFailures: (rows) => {
      for (const row of rows) {
        parsingFile.warn(
          {
            connectionId: row.connectionId,
            topic: row.topic,
            parser: row.parser,
            kind: row.kind,
            issuePaths: row.issuePaths,
            count: row.count,
          },
          row.message,
        );
      }
    },
  });
  const discovery = new DiscoveryAggregator(sql, logger.child({ component: 'discovery' }), {
    flushMs: config.BFG_DISCOVERY_FLUSH_MS,
    maxTopics: config.BFG_DISCOVERY_MAX_TOPICS,
    metrics,
  });
  const reporter = new StatusReporter(sql, connectionFile, logger.child({ component: 'status' }), {
    instance: config.BFG_INSTANCE_ID,
    flushMs: config.BFG_STATUS_FLUSH_MS,
    idleTimeoutMs: timing.idleTimeoutMs,
    metrics,
  });
  const supervisor = new Supervisor(
    sql,
    {
      writer,
      discovery,
      reporter,
      registry: options.registry ?? defaultParserRegistry,
      logger: logger.child({ component: 'session' }),
      metrics,
      options: {
        maxPayloadBytes: config.BFG_MAX_PAYLOAD_BYTES,
        archiveUnmatched: config.BFG_ARCHIVE_UNMATCHED,
        reconnectMaxMs: config.BFG_RECONNECT_MAX_MS,
        receiveMaximum: config.BFG_MQTT_RECEIVE_MAXIMUM,
      },
    },
    leases,
  );
  const controlLoop = new ControlLoop(sql, supervisor, logger.child({ component: 'control-loop' }), {
    sweepMs: config.BFG_SWEEP_INTERVAL_MS,
    metrics,
  });
  const broadcaster = new SiteChangeBroadcaster(sql, logger.child({ component: 'site-changes' }), {
    maxRatePerSite: config.BFG_REALTIME_MAX_RATE,
    metrics,
  });

  // Replays, retention and staleness (graphile-worker), unless this instance leaves them to others.
  const jobs = config.BFG_WORKER
    ? createJobService(config, {
        sql,
        registry: options.registry ?? defaultParserRegistry,
        logger,
      })
    : undefined;

  const startedAt = new Date();
  let stopping = false;
  let http: RunningHttpServer | undefined;
  const routes = {
    async health() {
      const database = await checkDatabase(sql);
      return assessHealth(
        {
          database,
          connections: supervisor.observed(),
          lastReconcileAt: supervisor.lastReconciledAt,
          startedAt,
          stopping,
        },
        new Date(),
        { graceMs: config.BFG_HEALTH_GRACE_S * 1000, sweepMs: config.BFG_SWEEP_INTERVAL_MS },
      );
    },
    async metrics() {
      return { contentType: prometheus!.contentType, body: await prometheus!.render() };
    },
  };

  return {
    sql,
    supervisor,
    writer,
    controlLoop,
    leases,
    get httpAddress() {
      return http?.address;
    },
    async start() {
      // First, so that a port in use fails the start before any broker is connected.
      if (config.BFG_HTTP_PORT !== undefined)
        http = await startHttpServer(
          { host: config.BFG_HTTP_HOST, port: config.BFG_HTTP_PORT },
          routes,
          logger.child({ component: 'http' }),
        );
      discovery.start();
      reporter.start();
      // Registered before the first reconcile, so that the others count this instance at once.
      await leases.start();
      await controlLoop.start();
      await broadcaster.start();
      await jobs?.start();
    },
    async stop() {
      // /healthz says 503 from now on; /metrics keeps answering while the last writes go out.
      stopping = true;
      await controlLoop.stop();
      // Running jobs end their current step (a replay its batch) while live messages still flow.
      await jobs?.stop();
      supervisor.pauseAll();
      await writer.close(10_000).catch((err: unknown) => logger.error({ err: coerceError(err) }, 'final write failed'));
      await supervisor.stopAll('stopped: the ingestor is shutting down');
      await discovery.stop();
      await reporter.stop();
      // After the last commit and the last status: the next owner starts where this one ended.
      await leases.stop();
      // After every other final write, so the pages get those too.
      await broadcaster.stop();
      await Promise.all([flushLogger(connectionFile), flushLogger(parsingFile)]);
      await http?.close();
      await sql.end({ timeout: 5 });
    },
  };
}
