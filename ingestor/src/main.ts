#!/usr/bin/env -S node --max-semi-space-size=8 --max-old-space-size=256
import { ConfigError, loadIngestorConfig } from './config.ts';
import { startErrorReporting } from './error-reporting.ts';
import { coerceError } from './errors.ts';
import { createIngestor } from './ingestor.ts';
import { createWorkerProcess } from './jobs/service.ts';
import { createRootLogger } from './logger.ts';

/** How long the last error reports may take to send on the way out. */
const REPORT_FLUSH_MS = 2_000;

/**
 * `npm run ingestor` / `bfg-ingestor`: env → ingestor → run until SIGTERM/SIGINT.
 * `npm run worker` / `bfg-ingestor worker`: the background jobs alone (then run the ingestors with
 * BFG_WORKER=false, or keep both: jobs are shared through the database either way).
 */
async function main(): Promise<void> {
  const mode = process.argv[2] ?? 'ingest';
  if (mode !== 'ingest' && mode !== 'worker') {
    console.error(`unknown command "${mode}": bfg-ingestor [worker]`);
    process.exitCode = 2;
    return;
  }
  let config;
  try {
    config = loadIngestorConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exitCode = 1;
      return;
    }
    throw err;
  }
  // Sentry first (when SENTRY_DSN is set), so it sees everything from here on: errors logged at
  // level error with an `err` (see ErrorSink), uncaught exceptions and unhandled rejections.
  const reporting = await startErrorReporting({
    dsn: config.SENTRY_DSN,
    environment: config.SENTRY_ENVIRONMENT,
    serverName: config.BFG_INSTANCE_ID,
  });
  const logger = createRootLogger(
    config.BFG_LOG_LEVEL,
    { service: mode === 'worker' ? 'bfg-worker' : 'bfg-ingestor', instance: config.BFG_INSTANCE_ID },
    { ...(reporting && { onError: reporting.capture }) },
  );
  const ingestor = mode === 'worker' ? createWorkerProcess(config, logger) : createIngestor(config, logger);
  const closeReporting = () => reporting?.close(REPORT_FLUSH_MS).catch(() => undefined);

  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(130);
    }
    stopping = true;
    logger.info({ signal }, 'stopping: no new messages, writing what was received, ending broker clients');
    void ingestor
      .stop()
      .then(
        () => {
          logger.info('stopped');
          process.exitCode = 0;
        },
        (err: unknown) => {
          logger.error({ err: coerceError(err) }, 'unclean stop');
          process.exitCode = 1;
        },
      )
      .then(closeReporting);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  try {
    await ingestor.start();
  } catch (err) {
    // A signal during the start stops the parts started so far, and what was still starting may
    // fail on the closed pool: that is the stop the signal asked for, not a failed start.
    if (stopping) return;
    // E.g. BFG_HTTP_PORT in use. Parts may have started; exit instead of leaving them running.
    logger.error({ err: coerceError(err) }, 'bfg-ingestor failed to start');
    await closeReporting();
    process.exit(1);
  }
  if (!stopping) logger.info(mode === 'worker' ? 'job worker started' : 'ingestor started');
}

main().catch((err: unknown) => {
  console.error('bfg-ingestor failed to start:', coerceError(err));
  process.exitCode = 1;
});
