import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getFreePort, startDemoBroker } from '@bfg/local';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { newSite } from '../support/factories.ts';
import { startIngestor, waitForStatus, type RunningIngestor } from '../support/ingestor.ts';
import { startMosquitto, type RunningMosquitto } from '../support/mosquitto.ts';
import { waitFor } from '../support/wait-for.ts';

/**
 * The control loop against real Postgres and real brokers: whatever changes mqtt_connection
 * (here plain SQL, as Studio or psql would), the ingestor follows.
 */

let db: TestDatabase;
let run: RunningIngestor;
let broker: Awaited<ReturnType<typeof startDemoBroker>>;
let mosquitto: RunningMosquitto;
const SWEEP_MS = 700;

/** A connection row; MQTT 3.1.1 for the demo broker (aedes speaks no MQTT 5), MQTT 5 for Mosquitto. */
async function newConnectionRow(port: number, fields: { username?: string } = {}) {
  const site = await newSite(db.sql);
  const version = port === broker?.port ? 4 : 5;
  const [row] = await db.sql<{ id: string }[]>`
    insert into mqtt_connection (site_id, host, port, protocol_version, username, is_active)
    values (${site.id}, '127.0.0.1', ${port}, ${version}, ${fields.username ?? null}, false) returning id::text as id`;
  return { id: row!.id, site };
}

beforeAll(async () => {
  db = await createTestDatabase();
  broker = await startDemoBroker({ port: await getFreePort() });
  mosquitto = await startMosquitto({ users: { bfg: 'right-password' }, tls: true });
  run = await startIngestor(db.url, { BFG_SWEEP_INTERVAL_MS: String(SWEEP_MS) });
});

afterAll(async () => {
  await run?.stop();
  await broker?.close();
  await mosquitto?.stop();
  await db?.drop();
});

describe('connection control loop', () => {
  it('UPDATE … SET is_active = true in plain SQL connects within 1 s; false disconnects', async () => {
    const { id } = await newConnectionRow(broker.port);
    const started = Date.now();
    await db.sql`update mqtt_connection set is_active = true where id = ${id}`;
    await waitForStatus(db.sql, id, 'connected', { timeoutMs: 1_000 });
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(run.ingestor.supervisor.session(id)).toBeDefined();

    await db.sql`update mqtt_connection set is_active = false where id = ${id}`;
    await waitForStatus(db.sql, id, 'disconnected', { timeoutMs: 1_000 });
    expect(run.ingestor.supervisor.session(id)).toBeUndefined();
    const events = await db.sql<{ event: string; status: string }[]>`
      select event, status from mqtt_connection_log where connection_id = ${id} order by id`;
    expect(events.map((e) => e.status)).toEqual(expect.arrayContaining(['connecting', 'connected', 'disconnected']));
  });

  it('a settings change reconnects with the new settings; a deleted row disconnects', async () => {
    const { id } = await newConnectionRow(broker.port);
    await db.sql`update mqtt_connection set is_active = true where id = ${id}`;
    await waitForStatus(db.sql, id, 'connected');
    const before = run.ingestor.supervisor.session(id);

    await db.sql`update mqtt_connection set port = ${mosquitto.port}, protocol_version = 5, username = 'bfg' where id = ${id}`;
    await db.sql`select set_mqtt_connection_secret(${id}, 'right-password')`;
    await waitFor('a new session on the new port', () => {
      const session = run.ingestor.supervisor.session(id);
      return session !== before && session?.row.port === mosquitto.port && session.row.password === 'right-password';
    });
    await waitForStatus(db.sql, id, 'connected');

    await db.sql`delete from mqtt_connection where id = ${id}`;
    await waitFor('the session to end', () => run.ingestor.supervisor.session(id) === undefined);
  });

  it("a wrong password shows the broker's reason, is retried, and connects once corrected", async () => {
    const { id } = await newConnectionRow(mosquitto.port, { username: 'bfg' });
    await db.sql`select set_mqtt_connection_secret(${id}, 'wrong-password')`;
    await db.sql`update mqtt_connection set is_active = true where id = ${id}`;
    const failed = await waitForStatus(db.sql, id, 'error', {
      detail: /not authori[sz]ed|bad user ?name or password/i,
    });
    expect(failed.statusDetail).toMatch(/retrying in \d+ ms/);
    // Retried: more than one failed attempt is logged.
    await waitFor('a second attempt', async () => {
      const [row] = await db.sql<{ n: number }[]>`
        select count(*)::int as n from mqtt_connection_log where connection_id = ${id} and event = 'error'`;
      return row!.n >= 2;
    });
    await db.sql`select set_mqtt_connection_secret(${id}, 'right-password')`;
    await waitForStatus(db.sql, id, 'connected');
    await db.sql`update mqtt_connection set is_active = false where id = ${id}`;
  });

  it('connects over TLS with the CA from the secrets, and shows the TLS error without it', async () => {
    const { id } = await newConnectionRow(mosquitto.tlsPort!, { username: 'bfg' });
    await db.sql`update mqtt_connection set protocol = 'mqtts' where id = ${id}`;
    await db.sql`select set_mqtt_connection_secret(${id}, 'right-password')`;
    await db.sql`update mqtt_connection set is_active = true where id = ${id}`;
    await waitForStatus(db.sql, id, 'error', { detail: /certificate/i });
    await db.sql`select set_mqtt_connection_secret(${id}, null, null, null, ${mosquitto.caCert!})`;
    await waitForStatus(db.sql, id, 'connected', { detail: /subscribed/ });
    await db.sql`update mqtt_connection set is_active = false where id = ${id}`;
    await waitForStatus(db.sql, id, 'disconnected');
  });

  it('never writes broker passwords to its log files', async () => {
    const files = await fs.readdir(run.logDir);
    expect(files.some((f) => f.startsWith('connections'))).toBe(true);
    for (const file of files) {
      const text = await fs.readFile(path.join(run.logDir, file), 'utf8');
      expect(text).not.toContain('right-password');
      expect(text).not.toContain('wrong-password');
    }
  });

  it('a refused connection (nothing listening) shows the socket error', async () => {
    const { id } = await newConnectionRow(await getFreePort());
    await db.sql`update mqtt_connection set is_active = true where id = ${id}`;
    await waitForStatus(db.sql, id, 'error', { detail: /ECONNREFUSED/ });
    await db.sql`update mqtt_connection set is_active = false where id = ${id}`;
    await waitForStatus(db.sql, id, 'disconnected');
  });

  it('survives the LISTEN backend being killed: it re-LISTENs and reacts again', async () => {
    const { id } = await newConnectionRow(broker.port);
    const killed = await db.sql<{ pid: number }[]>`
      select pg_terminate_backend(pid), pid from pg_stat_activity
      where datname = current_database() and query ilike 'listen%'`;
    expect(killed.length).toBeGreaterThanOrEqual(1);
    await db.sql`update mqtt_connection set is_active = true where id = ${id}`;
    await waitForStatus(db.sql, id, 'connected', { timeoutMs: 5_000 });
    await db.sql`update mqtt_connection set is_active = false where id = ${id}`;
    await waitForStatus(db.sql, id, 'disconnected');
  });

  it('repairs a missed NOTIFY with the sweep', async () => {
    const { id } = await newConnectionRow(broker.port);
    // Triggers off for this transaction: the change is made but nobody is notified.
    await db.sql.begin(async (tx) => {
      await tx`set local session_replication_role = replica`;
      await tx`update mqtt_connection set is_active = true where id = ${id}`;
    });
    await waitForStatus(db.sql, id, 'connected', { timeoutMs: SWEEP_MS * 3 + 2_000 });
    await db.sql`update mqtt_connection set is_active = false where id = ${id}`;
  });

  it('reconnects and resubscribes after a broker restart', async () => {
    const { id, site } = await newConnectionRow(mosquitto.port, { username: 'bfg' });
    await db.sql`update mqtt_connection set clean_start = true where id = ${id}`;
    await db.sql`select set_mqtt_connection_secret(${id}, 'right-password')`;
    await db.sql`update mqtt_connection set is_active = true where id = ${id}`;
    await waitForStatus(db.sql, id, 'connected', { detail: /subscribed/ });

    await mosquitto.restart();
    await waitFor('a reconnect logged', async () => {
      const rows = await db.sql`select 1 from mqtt_connection_log where connection_id = ${id} and event = 'reconnect'`;
      return rows.length > 0;
    });
    await waitForStatus(db.sql, id, 'connected', { detail: /subscribed/ });

    // Subscribed again: a message published now is discovered.
    const { connectClient } = await import('../support/mqtt-client.ts');
    const publisher = await connectClient(mosquitto.url, { username: 'bfg', password: 'right-password' });
    const topic = `${site.slug}/gateway/gw-1/status`;
    await waitFor(
      'the message after the restart to be discovered',
      async () => {
        await publisher.publishAsync(topic, '{"online":true}', { qos: 1 });
        const rows = await db.sql`select 1 from discovered_topic where connection_id = ${id} and topic = ${topic}`;
        return rows.length > 0;
      },
      { intervalMs: 250 },
    );
    await publisher.endAsync();
    await db.sql`update mqtt_connection set is_active = false where id = ${id}`;
  });
});

describe('ingestor configuration', () => {
  it('lists every bad variable in one message, without their values', async () => {
    const { loadIngestorConfig } = await import('@bfg/ingestor');
    expect(() =>
      loadIngestorConfig({ DATABASE_URL: 'mysql://u:secret@h/db', BFG_SWEEP_INTERVAL_MS: '0', BFG_LOG_LEVEL: 'loud' }),
    ).toThrow(
      /Invalid environment variables:\n {2}DATABASE_URL: .*\n {2}BFG_SWEEP_INTERVAL_MS: .*\n {2}BFG_LOG_LEVEL: /,
    );
    expect(() => loadIngestorConfig({ DATABASE_URL: 'mysql://u:secret@h/db' })).not.toThrow(/secret/);
  });
});
