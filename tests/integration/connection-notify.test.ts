import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { newConnection, newSite } from '../support/factories.ts';
import { Inbox } from '../support/wait.ts';

/**
 * The control loop's trigger: any change to mqtt_connection's desired state or settings, made from
 * plain SQL (as Studio or psql would), reaches a LISTENer as a tiny {id, op} payload.
 */

const CHANNEL = 'mqtt_connection:changed';
const MARKER = 'marker';

let db: TestDatabase;
let listener: postgres.Sql;
const inbox = new Inbox<string>();
let conn: { id: string; clientId: string; subscribeFilters: string[] };
let site: { id: string; slug: string };

beforeAll(async () => {
  db = await createTestDatabase();
  site = await newSite(db.sql);
  listener = postgres(db.url, { max: 1, onnotice: () => undefined });
  await listener.listen(CHANNEL, inbox.push);
  conn = await newConnection(db.sql, site.id);
  // The insert's own notification.
  expect(JSON.parse(await inbox.next('the insert notification'))).toEqual({ id: Number(conn.id), op: 'INSERT' });
});

afterAll(async () => {
  await listener.end();
  await db.drop();
});

/** Every notification up to a marker we send ourselves: proves what did *not* notify, without a sleep. */
async function notificationsUntilMarker(): Promise<unknown[]> {
  await db.sql`select pg_notify(${CHANNEL}, ${MARKER})`;
  const seen: unknown[] = [];
  for (;;) {
    const payload = await inbox.next('notifications up to the marker');
    if (payload === MARKER) return seen;
    seen.push(JSON.parse(payload));
  }
}

describe('mqtt_connection NOTIFY', () => {
  it('fills the client id and subscribe filters from the site', () => {
    expect(conn.clientId).toBe(`bfg-${site.slug}`);
    expect(conn.subscribeFilters).toEqual([`${site.slug}/#`]);
  });

  it('UPDATE … SET is_active from plain SQL notifies with the id and operation', async () => {
    await db.sql`update mqtt_connection set is_active = true where id = ${conn.id}`;
    expect(JSON.parse(await inbox.next('the is_active notification'))).toEqual({ id: Number(conn.id), op: 'UPDATE' });
    await db.sql`update mqtt_connection set is_active = false where id = ${conn.id}`;
    expect(await notificationsUntilMarker()).toEqual([{ id: Number(conn.id), op: 'UPDATE' }]);
  });

  it('a settings change notifies; status writes by the ingestor do not', async () => {
    await db.sql`update mqtt_connection set status = 'connecting', status_detail = 'dialing' where id = ${conn.id}`;
    await db.sql`update mqtt_connection set last_message_at = now() where id = ${conn.id}`;
    await db.sql`update mqtt_connection set keepalive_s = 30 where id = ${conn.id}`;
    await db.sql`update mqtt_connection set subscribe_filters = '{a/#,b/#}' where id = ${conn.id}`;
    expect(await notificationsUntilMarker()).toEqual([
      { id: Number(conn.id), op: 'UPDATE' },
      { id: Number(conn.id), op: 'UPDATE' },
    ]);
  });

  it('an update that changes nothing does not notify', async () => {
    await db.sql`update mqtt_connection set is_active = is_active where id = ${conn.id}`;
    expect(await notificationsUntilMarker()).toEqual([]);
  });

  it('a secret change notifies its connection (the client must reconnect with it)', async () => {
    await db.sql`select set_mqtt_connection_secret(${conn.id}, 'new-password')`;
    expect(await notificationsUntilMarker()).toEqual([{ id: Number(conn.id), op: 'UPDATE' }]);
  });

  it('status_changed_at follows status changes whoever writes them', async () => {
    const [before] = await db.sql<
      { at: Date }[]
    >`select status_changed_at as at from mqtt_connection where id = ${conn.id}`;
    await db.sql`update mqtt_connection set status = 'error', status_detail = 'refused' where id = ${conn.id}`;
    const [after] = await db.sql<
      { at: Date }[]
    >`select status_changed_at as at from mqtt_connection where id = ${conn.id}`;
    expect(after!.at.getTime()).toBeGreaterThan(before!.at.getTime());
  });

  it('deleting the row notifies', async () => {
    await db.sql`delete from mqtt_connection where id = ${conn.id}`;
    expect(await notificationsUntilMarker()).toEqual([{ id: Number(conn.id), op: 'DELETE' }]);
  });
});
