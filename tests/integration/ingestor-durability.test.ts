import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { MqttClient } from 'mqtt';
import postgres from 'postgres';
import { afterEach, describe, expect, it } from 'vitest';
import { repoRoot } from '@bfg/local';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { connectionState, startIngestor, waitForStatus, type RunningIngestor } from '../support/ingestor.ts';
import { startMosquitto, type RunningMosquitto } from '../support/mosquitto.ts';
import { startOwnPostgres, type OwnPostgres } from '../support/own-postgres.ts';
import { connectClient } from '../support/mqtt-client.ts';
import { makeTempDir } from '../support/temp-dir.ts';
import { waitFor } from '../support/wait-for.ts';

/**
 * No ack before commit: QoS 1 messages are acknowledged only once their rows are committed, so
 * neither a database outage nor a killed ingestor loses one, and redeliveries store nothing twice.
 */

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
});

/** A site + connection (persistent session, QoS 1) with the data pattern, pointing at `port`. */
async function setUpConnection(sql: postgres.Sql, port: number): Promise<{ id: string; topic: string }> {
  const slug = `s${randomBytes(3).toString('hex')}`;
  const [site] = await sql<
    { id: string }[]
  >`insert into site (slug, name) values (${slug}, ${slug}) returning id::text as id`;
  const [conn] = await sql<{ id: string }[]>`
    insert into mqtt_connection (site_id, host, port, is_active) values (${site!.id}, '127.0.0.1', ${port}, true)
    returning id::text as id`;
  await sql`insert into mqtt_topic (connection_id, pattern, parser)
            values (${conn!.id}, '+site/gateway/+gateway/datalogger/+datalogger/data', 'bfg.datalogger-data.v1')`;
  return { id: conn!.id, topic: `${slug}/gateway/gw-1/datalogger/dl-1/data` };
}

/** Message i carries one reading at a distinct second, so the stored count says exactly what arrived. */
const reading = (i: number) =>
  JSON.stringify({
    ts: new Date(Date.UTC(2026, 10, 1) + i * 1000).toISOString(),
    readings: [{ sensor: 't', value: i }],
  });

async function publishRange(client: MqttClient, topic: string, from: number, to: number): Promise<void> {
  const pending: Promise<unknown>[] = [];
  for (let i = from; i < to; i++) pending.push(client.publishAsync(topic, reading(i), { qos: 1 }));
  await Promise.all(pending);
}

const storedCount = async (sql: postgres.Sql) =>
  (await sql<{ n: number }[]>`select count(*)::int as n from sensor_reading`)[0]!.n;

async function ownPostgres(): Promise<OwnPostgres> {
  const pg = await startOwnPostgres();
  cleanups.push(() => pg.remove());
  return pg;
}

describe('no ack before commit', () => {
  it('loses nothing and stores nothing twice when Postgres stops mid-stream and comes back', async () => {
    const pg = await ownPostgres();
    const { url, sql } = pg;

    const mosquitto: RunningMosquitto = await startMosquitto();
    cleanups.push(() => mosquitto.stop());
    const { id, topic } = await setUpConnection(sql, mosquitto.port);
    const maxPending = 500;
    const run: RunningIngestor = await startIngestor(url, {
      BFG_MAX_PENDING_MESSAGES: String(maxPending),
      BFG_BATCH_MAX_MESSAGES: '100',
    });
    cleanups.push(() => run.stop());
    await waitForStatus(sql, id, 'connected', { detail: /subscribed/ });
    const publisher = await connectClient(mosquitto.url);
    cleanups.push(() => publisher.endAsync());

    const total = 3_000;
    await publishRange(publisher, topic, 0, 1_000);
    await waitFor('some rows committed', () => storedCount(sql), { accept: (n) => n > 0 });
    await pg.stop();
    await publishRange(publisher, topic, 1_000, total);
    // While the database is away, the ingestor holds at most maxPending messages and reads no more.
    await waitFor('the writer to fill up and stop', () => run.ingestor.writer.pending, {
      accept: (n) => n >= maxPending,
    });
    expect(run.ingestor.writer.pending).toBeLessThanOrEqual(maxPending + 1);

    await pg.start();
    await waitFor(`all ${total} readings`, () => storedCount(sql), { accept: (n) => n >= total, timeoutMs: 30_000 });
    expect(await storedCount(sql)).toBe(total);
    const [range] = await sql<
      { min: number; max: number }[]
    >`select min(value) as min, max(value) as max from sensor_reading`;
    expect(range).toEqual({ min: 0, max: total - 1 });
  });

  it.each(['SIGKILL', 'SIGTERM'] as const)(
    'stores every QoS 1 message once when the ingestor gets %s mid-stream and restarts',
    async (signal) => {
      const db: TestDatabase = await createTestDatabase();
      cleanups.push(() => db.drop());
      const mosquitto = await startMosquitto();
      cleanups.push(() => mosquitto.stop());
      const { id, topic } = await setUpConnection(db.sql, mosquitto.port);
      const logs = await makeTempDir('killed-ingestor');
      cleanups.push(() => logs.remove());

      const spawnIngestor = (): ChildProcess => {
        const child = spawn(process.execPath, [path.join(repoRoot, 'ingestor/src/main.ts')], {
          env: {
            ...process.env,
            DATABASE_URL: db.url,
            BFG_LOG_DIR: logs.path,
            BFG_LOG_LEVEL: 'warn',
            BFG_INSTANCE_ID: 'killable',
            // The restarted process waits for the killed one's lease to run out (a SIGTERMed one
            // released it): keep that short.
            BFG_LEASE_TAKEOVER_S: '3',
          },
          stdio: ['ignore', 'ignore', 'inherit'],
        });
        cleanups.push(() => Promise.resolve(child.kill('SIGKILL')));
        return child;
      };

      let child = spawnIngestor();
      await waitForStatus(db.sql, id, 'connected', { detail: /subscribed/, timeoutMs: 15_000 });
      const publisher = await connectClient(mosquitto.url);
      cleanups.push(() => publisher.endAsync());

      const total = 30_000;
      const half = total / 2;
      const publishing = publishRange(publisher, topic, 0, half);
      await waitFor('a first part committed', () => storedCount(db.sql), { accept: (n) => n >= 1_000, intervalMs: 5 });
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill(signal);
      const code = await exited;
      // SIGTERM is a graceful stop: what was received is written and acknowledged, then exit 0.
      if (signal === 'SIGTERM') {
        expect(code).toBe(0);
        expect((await connectionState(db.sql, id)).status).toBe('disconnected');
      }
      await publishing;
      // Published while the ingestor is down: the broker keeps them for its persistent session.
      await publishRange(publisher, topic, half, total);
      expect(await storedCount(db.sql)).toBeLessThanOrEqual(half);

      child = spawnIngestor();
      await waitFor(`all ${total} readings`, () => storedCount(db.sql), {
        accept: (n) => n >= total,
        timeoutMs: 30_000,
      });
      expect(await storedCount(db.sql)).toBe(total);
    },
  );
});

describe('shutdown', () => {
  it('stops promptly once Postgres is back from an outage', async () => {
    const pg = await ownPostgres();
    const mosquitto = await startMosquitto();
    cleanups.push(() => mosquitto.stop());
    const { id, topic } = await setUpConnection(pg.sql, mosquitto.port);
    const run = await startIngestor(pg.url);
    let stopped = false;
    cleanups.push(() => (stopped ? Promise.resolve() : run.stop()));
    await waitForStatus(pg.sql, id, 'connected', { detail: /subscribed/ });
    const publisher = await connectClient(mosquitto.url);
    cleanups.push(() => publisher.endAsync());

    // An outage long enough for a few failed writes (each one a failed reconnect of the pool).
    await pg.stop();
    let sent = 0;
    await waitFor(
      'the writer to retry a few times',
      async () => {
        await publishRange(publisher, topic, sent, sent + 1);
        sent += 1;
        return run.ingestor.writer.totals.retries;
      },
      { accept: (n) => n >= 4, intervalMs: 250, timeoutMs: 20_000 },
    );
    await waitFor('every message published to be held by the writer', () => run.ingestor.writer.pending, {
      accept: (n) => n === sent,
    });
    await pg.start();

    // Postgres accepts connections again. The graceful stop writes what was received, ends the
    // broker clients, flushes, closes the pool; it used to wait for postgres.js' reconnect backoff
    // (grown to up to 20 s during the outage), and for the writer's own retry sleep.
    const started = performance.now();
    await run.stop();
    stopped = true;
    const elapsed = performance.now() - started;
    console.info(`ingestor.stop() right after the outage took ${Math.round(elapsed)} ms`);
    expect(elapsed).toBeLessThan(2_000);
    // And it was a graceful stop: everything the writer held was written.
    expect(await storedCount(pg.sql)).toBe(sent);
  });
});
