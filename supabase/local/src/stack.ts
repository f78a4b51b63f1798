import path from 'node:path';
import pino from 'pino';
import postgres from 'postgres';
import { createIngestor, loadIngestorConfig, type Ingestor } from '@bfg/ingestor';
import { runSimulation } from '@bfg/ingestor/simulator';
import type { LocalConfig } from './config.ts';
import { LocalStackError, coerceError } from './errors.ts';
import { openLocalDatabase, type LocalDatabase } from './database.ts';
import { startDemoBroker } from './demo-broker.ts';
import { createAuthApi } from './auth/api/auth-server.ts';
import { startRealtimeServer } from './realtime/server.ts';
import { ensureFirstAdmin } from './first-admin.ts';
import { loadOrCreateSecrets } from './secrets.ts';
import { startWebServer } from './web-server.ts';

export interface LocalStack {
  readonly databaseUrl: string;
  readonly brokerUrl: string;
  readonly realtimeUrl: string;
  /** The dashboard's URL, when it runs (BFG_WEB). */
  readonly webUrl: string | null;
  stop(): Promise<void>;
}

/**
 * `npm start`: the whole local system — database (migrated, seeded), realtime server, the demo
 * broker the seed's connection points at, the ingestor, a simulated fleet publishing to the broker,
 * and the dashboard (a child process running its production build). Stops in reverse order.
 */
export async function startLocalStack(config: LocalConfig, log: (message: string) => void): Promise<LocalStack> {
  const stops: (() => Promise<void>)[] = [];
  const stopAll = async () => {
    for (const stop of stops.reverse()) await stop().catch((err: unknown) => log(`while stopping: ${String(err)}`));
  };
  try {
    const db: LocalDatabase = await starting(
      'the database',
      'Check BFG_DATA_DIR and BFG_DB_PORT, or DATABASE_URL',
      () => openLocalDatabase(config, log),
    );
    stops.push(() => db.stop());
    const { applied, seeded } = db.migration;
    log(
      applied.length
        ? `schema up to date (${applied.length} new migration(s))`
        : 'schema up to date (no new migrations)',
    );
    if (seeded) log('demo data seeded');
    log(
      db.embedded
        ? `Postgres listening on ${redact(db.url)} (psql "$(npm run -s db:url)")`
        : `using DATABASE_URL ${redact(db.url)}`,
    );

    const jwtSecret = config.BFG_JWT_SECRET ?? (await loadOrCreateSecrets(config.BFG_DATA_DIR)).jwtSecret;
    // The stack's own pool: the realtime server's authorization checks and the start-up writes.
    const sql = postgres(db.url, { max: 4, onnotice: () => undefined });
    stops.push(() => sql.end({ timeout: 5 }));
    const realtime = await starting('the realtime server', 'Check BFG_REALTIME_PORT and BFG_LISTEN_HOST', () =>
      startRealtimeServer({
        port: config.BFG_REALTIME_PORT,
        host: config.BFG_LISTEN_HOST,
        jwtSecret,
        sql,
        databaseUrl: db.url,
        log,
        // The Auth API (GoTrue subset) on the same port, so one Supabase URL serves auth and realtime.
        httpHandler: createAuthApi({ sql, jwtSecret, log }),
      }),
    );
    stops.push(() => realtime.close());
    log(`realtime server (Supabase Realtime protocol) on ${realtime.url.replace('http', 'ws')}/realtime/v1/websocket`);

    const broker = await starting('the demo MQTT broker', 'Check BFG_MQTT_PORT and BFG_LISTEN_HOST', () =>
      startDemoBroker({ port: config.BFG_MQTT_PORT, host: config.BFG_LISTEN_HOST }),
    );
    stops.push(() => broker.close());
    log(`demo MQTT broker listening on ${broker.url}`);
    await pointDemoConnectionAt(sql, broker.port, log);

    if (config.BFG_INGESTOR) {
      const ingestorConfig = loadIngestorConfig({
        ...process.env,
        DATABASE_URL: db.url,
        BFG_LOG_DIR: process.env['BFG_LOG_DIR'] ?? path.join(config.BFG_DATA_DIR, 'logs'),
      });
      const logger = pino({ level: ingestorConfig.BFG_LOG_LEVEL === 'info' ? 'warn' : ingestorConfig.BFG_LOG_LEVEL });
      const ingestor: Ingestor = createIngestor(ingestorConfig, logger);
      await starting('the ingestor', 'Its log on stdout (BFG_LOG_LEVEL=debug) says more', () => ingestor.start());
      stops.push(() => ingestor.stop());
      log(`ingestor running (logs: ${ingestorConfig.BFG_LOG_DIR})`);
    } else {
      log(
        'no ingestor (BFG_INGESTOR=false): start instances with DATABASE_URL="$(npm run -s db:url)" npm run ingestor',
      );
    }

    if (config.BFG_SIMULATE) {
      const controller = new AbortController();
      const simulation = runSimulation(
        {
          url: broker.url,
          sites: ['demo'],
          gateways: 3,
          dataloggers: 2,
          sensors: 4,
          intervalS: 5,
          badFraction: 0.02,
          qos: 1,
          count: 0,
          mixForms: true,
        },
        controller.signal,
        (line) => log(`simulator: ${line}`),
      );
      stops.push(async () => {
        controller.abort();
        await simulation;
      });
    }

    let webUrl: string | null = null;
    if (config.BFG_WEB) {
      const web = await starting('the dashboard', 'Check BFG_WEB_PORT, or run without it (BFG_WEB=false)', () =>
        startWebServer({
          port: config.BFG_WEB_PORT,
          host: config.BFG_LISTEN_HOST,
          databaseUrl: db.url,
          jwtSecret,
          realtimeUrl: realtime.url,
          log,
        }),
      );
      stops.push(() => web.stop());
      webUrl = web.url;
      log(`dashboard on ${web.url}`);
      await ensureFirstAdmin(sql, log);
    }
    return { databaseUrl: db.url, brokerUrl: broker.url, realtimeUrl: realtime.url, webUrl, stop: stopAll };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/**
 * Runs one service's start-up. A failure it explains itself (a LocalStackError: a taken port, an
 * unusable directory) goes through as it is; any other becomes one that names the service and
 * what to look at, so start-up always ends with one line saying what failed and what to do.
 */
async function starting<T>(service: string, hint: string, start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (err) {
    if (err instanceof LocalStackError) throw err;
    throw new LocalStackError(
      `${service[0]!.toUpperCase()}${service.slice(1)} did not start: ${coerceError(err).message}. ${hint}.`,
      { cause: err },
    );
  }
}

/**
 * The seed points the demo connection at 127.0.0.1:1883; when the demo broker runs on another
 * port (BFG_MQTT_PORT), follow it — only while that connection still points at loopback.
 */
async function pointDemoConnectionAt(sql: postgres.Sql, port: number, log: (message: string) => void): Promise<void> {
  const moved = await sql`
      update public.mqtt_connection c set port = ${port}
      from public.site s
      where s.id = c.site_id and s.slug = 'demo' and c.host in ('127.0.0.1', 'localhost') and c.port <> ${port}
      returning c.id`;
  if (moved.length > 0) log(`demo connection now points at the demo broker's port ${port}`);
}

/** Hides the password of a connection URL for printing. */
export function redact(url: string): string {
  const parsed = new URL(url);
  if (parsed.password) parsed.password = '***';
  return parsed.toString();
}
