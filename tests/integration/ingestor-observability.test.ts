import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type postgres from 'postgres';
import { afterEach, describe, expect, it } from 'vitest';
import { getFreePort, repoRoot } from '@bfg/local';
import { createTestDatabase } from '../support/db.ts';
import { startFakeSentry } from '../support/fake-sentry.ts';
import { connectionState, startIngestor, waitForStatus, type RunningIngestor } from '../support/ingestor.ts';
import { startMosquitto } from '../support/mosquitto.ts';
import { connectClient } from '../support/mqtt-client.ts';
import { startOwnPostgres } from '../support/own-postgres.ts';
import { makeTempDir } from '../support/temp-dir.ts';
import { waitFor } from '../support/wait-for.ts';

/**
 * The ingestor's HTTP server (/healthz, /metrics; BFG_HTTP_PORT) and its Sentry reports, against
 * real Postgres, a real Mosquitto and, for Sentry, a loopback stand-in for Sentry's ingest that
 * receives the real SDK's envelopes.
 */

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
});

/** A site whose connection (active, QoS 1) points at `port`, with the data pattern. */
async function setUpConnection(sql: postgres.Sql, port: number) {
  const slug = `s${randomBytes(3).toString('hex')}`;
  const [site] = await sql<{ id: string }[]>`
    insert into site (slug, name) values (${slug}, ${slug}) returning id::text as id`;
  const [conn] = await sql<{ id: string }[]>`
    insert into mqtt_connection (site_id, host, port, is_active) values (${site!.id}, '127.0.0.1', ${port}, true)
    returning id::text as id`;
  await sql`insert into mqtt_topic (connection_id, pattern, parser)
            values (${conn!.id}, '+site/gateway/+gateway/datalogger/+datalogger/data', 'bfg.datalogger-data.v1')`;
  return { id: conn!.id, slug, dataTopic: `${slug}/gateway/gw-1/datalogger/dl-1/data` };
}

async function withHttp(databaseUrl: string, env: Record<string, string> = {}): Promise<RunningIngestor> {
  const run = await startIngestor(databaseUrl, { BFG_HTTP_PORT: '0', ...env });
  cleanups.push(() => run.stop());
  return run;
}

function urlOf(run: RunningIngestor, route: string): string {
  const address = run.ingestor.httpAddress;
  if (!address) throw new Error('the ingestor has no HTTP server');
  return `http://${address.host}:${address.port}${route}`;
}

interface Health {
  healthy: boolean;
  stopping: boolean;
  database: { reachable: boolean; error?: string };
  reconcile: { ok: boolean; last_success_at: string | null };
  connections: {
    active: number;
    unhealthy: {
      id: string;
      site: string;
      status: string;
      status_detail: string | null;
      not_connected_since: string;
    }[];
  };
}

async function health(url: string): Promise<{ status: number; body: Health }> {
  const res = await fetch(url);
  expect(res.headers.get('content-type')).toBe('application/json');
  return { status: res.status, body: (await res.json()) as Health };
}

const waitForHealth = (url: string, status: number, accept: (body: Health) => boolean = () => true) =>
  waitFor(`/healthz to answer ${status}`, () => health(url), {
    accept: (h) => h.status === status && accept(h.body),
    timeoutMs: 15_000,
  });

/** The value of one sample in Prometheus text format (labels given must match; others may be present). */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const present = new Map<string, string>();
    for (const [, key, value] of (match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) present.set(key!, value!);
    if (Object.entries(labels).every(([key, value]) => present.get(key) === value)) return Number(match[3]);
  }
  return undefined;
}

const metricsText = async (run: RunningIngestor) => (await fetch(urlOf(run, '/metrics'))).text();

describe('/healthz', () => {
  it('is 200 while the connection is connected, and 503 naming it once its broker has been down past the grace period', async () => {
    const db = await createTestDatabase();
    cleanups.push(() => db.drop());
    const mosquitto = await startMosquitto();
    cleanups.push(() => mosquitto.stop());
    const { id, slug } = await setUpConnection(db.sql, mosquitto.port);
    const run = await withHttp(db.url, { BFG_HEALTH_GRACE_S: '3' });
    await waitForStatus(db.sql, id, 'connected', { detail: /subscribed/ });

    const ok = await health(urlOf(run, '/healthz'));
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({
      healthy: true,
      stopping: false,
      database: { reachable: true },
      reconcile: { ok: true },
      connections: { active: 1, unhealthy: [] },
    });

    await mosquitto.restart(async () => {
      await waitFor('the connection to be lost', () => connectionState(db.sql, id), {
        accept: (s) => s.status !== 'connected',
      });
      // Lost a moment ago: within the grace period, still healthy.
      expect((await health(urlOf(run, '/healthz'))).status).toBe(200);
      const down = await waitForHealth(urlOf(run, '/healthz'), 503);
      expect(down.body.healthy).toBe(false);
      expect(down.body.database).toEqual({ reachable: true });
      expect(down.body.connections.active).toBe(1);
      expect(down.body.connections.unhealthy).toHaveLength(1);
      const [unhealthy] = down.body.connections.unhealthy;
      expect(unhealthy).toMatchObject({ id, site: slug });
      expect(unhealthy!.status).toMatch(/^(reconnecting|connecting|error)$/);
      expect(unhealthy!.status_detail).toMatch(/ECONNREFUSED|reconnect|connection/i);
      expect(Date.parse(unhealthy!.not_connected_since)).toBeLessThanOrEqual(Date.now() - 3_000);
      const metrics = await metricsText(run);
      expect(sample(metrics, 'bfg_reconnects_total', { connection: id })).toBeGreaterThanOrEqual(1);
      expect(sample(metrics, 'bfg_connection_status', { connection: id, site: slug, status: 'connected' })).toBe(0);
    });
    // The broker is back: MQTT.js reconnects and the ingestor is healthy again.
    await waitForHealth(urlOf(run, '/healthz'), 200);
  });

  it('is 503 while Postgres is unreachable, and 200 again when it is back', async () => {
    const pg = await startOwnPostgres();
    cleanups.push(() => pg.remove());
    const mosquitto = await startMosquitto();
    cleanups.push(() => mosquitto.stop());
    const { id } = await setUpConnection(pg.sql, mosquitto.port);
    const run = await withHttp(pg.url, { BFG_SWEEP_INTERVAL_MS: '300' });
    await waitForStatus(pg.sql, id, 'connected', { detail: /subscribed/ });
    await waitForHealth(urlOf(run, '/healthz'), 200);

    await pg.stop();
    const down = await waitForHealth(urlOf(run, '/healthz'), 503);
    expect(down.body.database.reachable).toBe(false);
    expect(down.body.database.error).toBeTruthy();
    // The broker is still there: the connection itself is fine.
    expect(down.body.connections).toEqual({ active: 1, unhealthy: [] });
    // The sweep's reconciles fail meanwhile, and are counted.
    await waitFor(
      'a failed reconcile counted',
      async () => sample(await metricsText(run), 'bfg_database_errors_total', { operation: 'reconcile' }),
      { accept: (n) => (n ?? 0) >= 1 },
    );

    await pg.start();
    await waitForHealth(urlOf(run, '/healthz'), 200);
  });
});

describe('/metrics', () => {
  it('counts messages per connection and outcome, batches and commit times, with the process metrics', async () => {
    const db = await createTestDatabase();
    cleanups.push(() => db.drop());
    const mosquitto = await startMosquitto();
    cleanups.push(() => mosquitto.stop());
    const { id, slug, dataTopic } = await setUpConnection(db.sql, mosquitto.port);
    const run = await withHttp(db.url);
    await waitForStatus(db.sql, id, 'connected', { detail: /subscribed/ });
    const publisher = await connectClient(mosquitto.url);
    cleanups.push(() => publisher.endAsync());

    const reading = (i: number) =>
      JSON.stringify({
        ts: new Date(Date.UTC(2026, 10, 1) + i * 1000).toISOString(),
        readings: [{ sensor: 't', value: i }],
      });
    const messages = [
      ...Array.from({ length: 5 }, (_, i) => ({ topic: dataTopic, payload: reading(i) })),
      { topic: dataTopic, payload: 'not json' },
      { topic: dataTopic, payload: '{"ts": ' },
      { topic: dataTopic, payload: JSON.stringify({ ts: 'yesterday', readings: [] }) },
      ...Array.from({ length: 3 }, (_, i) => ({ topic: `${slug}/elsewhere/${i}`, payload: 'anything' })),
    ];
    for (const m of messages) await publisher.publishAsync(m.topic, m.payload, { qos: 1 });

    const text = await waitFor(`all ${messages.length} messages received and committed`, () => metricsText(run), {
      accept: (t) =>
        sample(t, 'bfg_messages_received_total', { connection: id }) === messages.length &&
        sample(t, 'bfg_batch_messages_sum') === messages.length,
    });
    const res = await fetch(urlOf(run, '/metrics'));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);

    expect(sample(text, 'bfg_messages_parsed_total', { connection: id })).toBe(5);
    expect(sample(text, 'bfg_messages_failed_total', { connection: id, kind: 'invalid_json' })).toBe(2);
    expect(sample(text, 'bfg_messages_failed_total', { connection: id, kind: 'schema' })).toBe(1);
    expect(sample(text, 'bfg_messages_skipped_total', { connection: id, reason: 'unmatched' })).toBe(3);
    expect(sample(text, 'bfg_pending_messages')).toBe(0);
    expect(sample(text, 'bfg_connection_status', { connection: id, site: slug, status: 'connected' })).toBe(1);
    expect(sample(text, 'bfg_connection_status', { connection: id, site: slug, status: 'reconnecting' })).toBe(0);
    expect(sample(text, 'bfg_reconnects_total', { connection: id })).toBe(0);
    // Histograms: each committed batch once in both.
    const batches = sample(text, 'bfg_batch_messages_count')!;
    expect(batches).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'bfg_batch_messages_bucket', { le: '+Inf' })).toBe(batches);
    expect(sample(text, 'bfg_batch_commit_seconds_count')).toBe(batches);
    expect(sample(text, 'bfg_batch_commit_seconds_bucket', { le: '+Inf' })).toBe(batches);
    expect(sample(text, 'bfg_batch_commit_seconds_sum')).toBeGreaterThan(0);
    expect(text).toContain('# TYPE bfg_database_errors_total counter');
    // Node's process metrics (collectDefaultMetrics).
    for (const name of [
      'process_cpu_user_seconds_total',
      'process_resident_memory_bytes',
      'nodejs_heap_size_used_bytes',
    ])
      expect(sample(text, name), name).toBeGreaterThan(0);
    expect(text).toContain('# TYPE nodejs_eventloop_lag_seconds gauge');
    // No label names a topic.
    expect(text).not.toContain('elsewhere');

    expect((await fetch(urlOf(run, '/nothing'))).status).toBe(404);
    expect((await fetch(urlOf(run, '/metrics'), { method: 'POST' })).status).toBe(405);
  });

  it('is not served when BFG_HTTP_PORT is unset', async () => {
    const db = await createTestDatabase();
    cleanups.push(() => db.drop());
    const run = await startIngestor(db.url);
    cleanups.push(() => run.stop());
    expect(run.ingestor.httpAddress).toBeUndefined();
  });
});

describe('Sentry', () => {
  it('receives an unexpected error of the control loop from the ingestor process, and /healthz says the loop is stuck', async () => {
    const db = await createTestDatabase();
    cleanups.push(() => db.drop());
    const sentry = await startFakeSentry();
    cleanups.push(() => sentry.close());
    const logs = await makeTempDir('sentry-ingestor');
    cleanups.push(() => logs.remove());
    const port = await getFreePort();
    const child = spawn(process.execPath, [path.join(repoRoot, 'ingestor/src/main.ts')], {
      env: {
        ...process.env,
        DATABASE_URL: db.url,
        BFG_LOG_DIR: logs.path,
        // Errors are sent to Sentry as they are logged, so the level must let them through.
        BFG_LOG_LEVEL: 'error',
        BFG_INSTANCE_ID: 'sentry-test',
        BFG_HTTP_PORT: String(port),
        BFG_SWEEP_INTERVAL_MS: '300',
        BFG_HEALTH_GRACE_S: '1',
        SENTRY_DSN: sentry.dsn,
        SENTRY_ENVIRONMENT: 'observability-test',
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    cleanups.push(() => Promise.resolve(child.kill('SIGKILL')));
    const healthz = `http://127.0.0.1:${port}/healthz`;
    await waitForHealth(healthz, 200);

    // A schema the ingestor does not know (say, a migration it predates): every reconcile now
    // fails with an error Postgres sends — not an outage, so it is unexpected and goes to Sentry.
    await db.sql`alter table mqtt_connection rename column subscribe_filters to subscribe_filters_renamed`;
    const event = (await waitFor(
      'the reconcile error in Sentry',
      () => sentry.envelopes.flatMap(eventsOf).find((e) => JSON.stringify(e.exception).includes('subscribe_filters')),
      { timeoutMs: 15_000 },
    ))!;
    expect(event.environment).toBe('observability-test');
    expect(event.server_name).toBe('sentry-test');
    expect(event.tags).toMatchObject({ component: 'control-loop', instance: 'sentry-test' });
    expect(event.extra?.['logMessage']).toMatch(/reconcile failed/);
    const down = await waitForHealth(healthz, 503, (b) => !b.reconcile.ok);
    expect(down.body.database).toEqual({ reachable: true });

    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});

interface SentryEvent {
  exception?: { values?: { type?: string; value?: string }[] };
  environment?: string;
  server_name?: string;
  tags?: Record<string, string>;
  extra?: Record<string, unknown>;
}

/** The error events of one envelope (newline-separated JSON: envelope header, then item header + payload pairs). */
function eventsOf(envelope: string): SentryEvent[] {
  const lines = envelope.split('\n').filter((line) => line.trim() !== '');
  const events: SentryEvent[] = [];
  for (let i = 1; i + 1 < lines.length; i += 2) {
    const header = JSON.parse(lines[i]!) as { type?: string };
    if (header.type === 'event') events.push(JSON.parse(lines[i + 1]!) as SentryEvent);
  }
  return events;
}
