#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { loadLocalConfig } from './config.ts';
import { embeddedDatabaseUrl, openLocalDatabase } from './database.ts';
import { takeOverShutdownSignals } from './embedded-postgres.ts';
import { startLocalStack } from './stack.ts';
import { LocalStackError } from './errors.ts';

const USAGE = `Usage: bfg-local <command>

Commands:
  start     run the local system (Postgres, demo broker, ingestor, simulator) until Ctrl-C
  migrate   apply bootstrap, new migrations and (on first run) the seed, then exit
  url       print the application database's connection URL (with its password, for psql)

Environment: DATABASE_URL, BFG_DATA_DIR, BFG_DB_PORT, BFG_DB_NAME, BFG_LISTEN_HOST (see README).`;

const log = (message: string) => console.log(`[bfg] ${message}`);

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({ allowPositionals: true, options: { help: { type: 'boolean', short: 'h' } } });
  const command = positionals[0];
  if (values.help || !command) {
    console.log(USAGE);
    return;
  }
  if (command !== 'start' && command !== 'migrate' && command !== 'url') {
    throw new LocalStackError(`Unknown command "${command}".\n\n${USAGE}`);
  }

  const config = loadLocalConfig();
  if (command === 'url') {
    console.log(config.DATABASE_URL ?? (await embeddedDatabaseUrl(config)));
    return;
  }
  if (command === 'migrate') {
    const db = await openLocalDatabase(config, log);
    const { applied, seeded } = db.migration;
    log(applied.length ? `applied ${applied.length} migration(s)` : 'no new migrations');
    if (seeded) log('demo data seeded');
    await db.stop();
    return;
  }

  takeOverShutdownSignals();
  const stack = await startLocalStack(config, log);
  log('press Ctrl-C to stop');
  await waitForSignal(async () => {
    log('stopping…');
    await stack.stop();
    log('stopped');
  });
}

/** First SIGINT/SIGTERM stops gracefully; a second one exits at once. */
function waitForSignal(stop: () => Promise<void>): Promise<void> {
  return new Promise((resolve, reject) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        console.error(`[bfg] ${signal} again: exiting now`);
        process.exit(130);
      }
      stopping = true;
      stop().then(resolve, reject);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}

main().catch((err: unknown) => {
  if (err instanceof LocalStackError) {
    console.error(`[bfg] ${err.message}`);
  } else {
    console.error('[bfg] unexpected error:', err);
  }
  process.exitCode = 1;
});
