#!/usr/bin/env node
import { randomBytes } from 'node:crypto';
import { constants } from 'node:os';
import { parseArgs } from 'node:util';
import postgres, { type Sql } from 'postgres';
import { addUser } from './auth/users.ts';
import { loadLocalConfig, type LocalConfig } from './config.ts';
import { embeddedDatabaseUrl, openLocalDatabase } from './database.ts';
import { takeOverShutdownSignals } from './embedded-postgres.ts';
import { relayToOwnProcessGroup } from './own-process-group.ts';
import { startLocalStack } from './stack.ts';
import { LocalStackError, coerceError } from './errors.ts';
import { isSupabaseDatabase, waitForSupabasePrerequisites } from './supabase-prerequisites.ts';

const USAGE = `Usage: bfg-local <command>

Commands:
  start     run the local system (Postgres, demo broker, ingestor, simulator) until Ctrl-C
  migrate   apply bootstrap, new migrations and (on first run) the seed, then exit
              [--no-seed]       leave the demo data out (production)
              [--wait SECONDS]  with DATABASE_URL: first wait up to SECONDS for the objects Supabase
                                Auth and Realtime create on their first start (docker-compose.yml)
  url       print the application database's connection URL (with its password, for psql)
  user:add  create or update a local account:
              --email EMAIL --role admin|member [--site SLUG ...]
              password from --generate-password (printed once), BFG_USER_PASSWORD, or standard input

Environment: DATABASE_URL, BFG_DATA_DIR, BFG_DB_PORT, BFG_DB_NAME, BFG_LISTEN_HOST (see README).`;

const log = (message: string) => console.log(`[bfg] ${message}`);

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      help: { type: 'boolean', short: 'h' },
      email: { type: 'string' },
      role: { type: 'string' },
      site: { type: 'string', multiple: true },
      'generate-password': { type: 'boolean' },
      'no-seed': { type: 'boolean' },
      wait: { type: 'string' },
    },
  });
  const command = positionals[0];
  if (values.help || !command) {
    console.log(USAGE);
    return;
  }
  if (command !== 'start' && command !== 'migrate' && command !== 'url' && command !== 'user:add') {
    throw new LocalStackError(`Unknown command "${command}".\n\n${USAGE}`);
  }

  const config = loadLocalConfig();
  if (command === 'url') {
    console.log(config.DATABASE_URL ?? (await embeddedDatabaseUrl(config)));
    return;
  }
  if (command === 'user:add') {
    const password = values['generate-password'] ? randomBytes(18).toString('base64url') : await readPassword();
    const db = await connectToLocalDatabase(config, log);
    try {
      const user = await addUser(db.sql, {
        email: values.email ?? '',
        password,
        role: (values.role ?? '') as 'admin',
        sites: values.site ?? [],
      });
      log(`${user.created ? 'created' : 'updated'} ${values.role} ${values.email} (id ${user.id})`);
      if (values['generate-password']) log(`password (shown once): ${password}`);
    } finally {
      await db.close();
    }
    return;
  }
  if (command === 'migrate') {
    if (values.wait !== undefined) await waitForSupabase(config, values.wait);
    const db = await openLocalDatabase(config, log, { seed: !values['no-seed'] });
    const { applied, seeded } = db.migration;
    log(applied.length ? `applied ${applied.length} migration(s)` : 'no new migrations');
    if (seeded) log('demo data seeded');
    await db.stop();
    return;
  }

  if (await relayToOwnProcessGroup()) return;
  takeOverShutdownSignals();
  // A signal while starting: leave at once; leaving stops a Postgres already started (runPostgres).
  const duringStartUp = (signal: NodeJS.Signals) => process.exit(128 + constants.signals[signal]);
  process.once('SIGINT', duringStartUp);
  process.once('SIGTERM', duringStartUp);
  const stack = await startLocalStack(config, log);
  process.off('SIGINT', duringStartUp);
  process.off('SIGTERM', duringStartUp);
  log('press Ctrl-C to stop');
  await waitForSignal(async () => {
    log('stopping…');
    await stack.stop();
    log('stopped');
  });
}

/** `migrate --wait SECONDS`: until DATABASE_URL has what Supabase's services create on their first start. */
async function waitForSupabase(config: LocalConfig, seconds: string): Promise<void> {
  if (!/^\d+$/.test(seconds)) throw new LocalStackError(`--wait takes a number of seconds, not "${seconds}".`);
  if (!config.DATABASE_URL) throw new LocalStackError('--wait is for an external database: set DATABASE_URL.');
  const sql = postgres(config.DATABASE_URL, { max: 1, onnotice: () => undefined, connect_timeout: 5 });
  try {
    const supabase = await isSupabaseDatabase(sql).catch((err: unknown) => {
      throw new LocalStackError(`Cannot reach DATABASE_URL: ${coerceError(err).message}`);
    });
    // Plain Postgres gets these objects from sql/bootstrap, in the migration run itself.
    if (!supabase) return;
    await waitForSupabasePrerequisites(sql, { timeoutMs: Number(seconds) * 1000, log });
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** BFG_USER_PASSWORD, or the whole of standard input when it is not a terminal. */
async function readPassword(): Promise<string> {
  const fromEnv = process.env['BFG_USER_PASSWORD'];
  if (fromEnv) return fromEnv;
  if (process.stdin.isTTY) {
    throw new LocalStackError(
      'Give the password on standard input (e.g. `read -s P; echo "$P" | npm run user:add -- …`), in BFG_USER_PASSWORD, or use --generate-password.',
    );
  }
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
}

/** The running local database (npm start), or one started for this command. */
async function connectToLocalDatabase(
  config: LocalConfig,
  log: (m: string) => void,
): Promise<{ sql: Sql; close(): Promise<void> }> {
  const url = config.DATABASE_URL ?? (await embeddedDatabaseUrl(config));
  const sql = postgres(url, { max: 1, onnotice: () => undefined, connect_timeout: 3 });
  try {
    await sql`select 1`;
    return { sql, close: () => sql.end() };
  } catch (err) {
    await sql.end();
    if (config.DATABASE_URL) throw new LocalStackError(`Cannot reach DATABASE_URL: ${coerceError(err).message}`);
  }
  const db = await openLocalDatabase(config, log);
  const local = postgres(db.url, { max: 1, onnotice: () => undefined });
  return {
    sql: local,
    close: async () => {
      await local.end();
      await db.stop();
    },
  };
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

/**
 * How every failure ends: the details (e.g. the server's last lines), then one line saying what
 * failed and what to do. A LocalStackError says that itself; anything else is a bug, shown with
 * its stack before that line.
 */
function fail(err: unknown): void {
  if (err instanceof LocalStackError) {
    for (const line of err.details) console.error(`[bfg] ${line}`);
    console.error(`[bfg] ${err.message}`);
  } else {
    console.error(err);
    console.error(`[bfg] unexpected error: ${coerceError(err).message} (a bug: please report it with the lines above)`);
  }
  process.exitCode = 1;
}

// An error nobody awaits (an 'error' event without a listener, a stray rejection) must end the
// same way, not with Node's dump of the event; the process cannot go on after it, so it exits.
process.on('uncaughtException', (err) => {
  fail(err);
  process.exit(1);
});
process.on('unhandledRejection', (reason) => {
  fail(reason);
  process.exit(1);
});

main().catch((err: unknown) => {
  fail(err);
  // What a failed start-up had started is stopped; a timer or socket one of its parts left behind
  // must not keep the process alive after that line.
  process.exit(1);
});
