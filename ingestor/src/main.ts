#!/usr/bin/env node
import { ConfigError, loadIngestorConfig } from './config.ts';
import { coerceError } from './errors.ts';
import { createIngestor } from './ingestor.ts';
import { createRootLogger } from './logger.ts';

/** `npm run ingestor` / `bfg-ingestor`: env → ingestor → run until SIGTERM/SIGINT. */
async function main(): Promise<void> {
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
  const logger = createRootLogger(config.BFG_LOG_LEVEL, { service: 'bfg-ingestor', instance: config.BFG_INSTANCE_ID });
  const ingestor = createIngestor(config, logger);

  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(130);
    }
    stopping = true;
    logger.info({ signal }, 'stopping: no new messages, writing what was received, ending broker clients');
    ingestor.stop().then(
      () => {
        logger.info('stopped');
        process.exitCode = 0;
      },
      (err: unknown) => {
        logger.error({ err: coerceError(err) }, 'unclean stop');
        process.exitCode = 1;
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  await ingestor.start();
  logger.info('ingestor started');
}

main().catch((err: unknown) => {
  console.error('bfg-ingestor failed to start:', coerceError(err));
  process.exitCode = 1;
});
