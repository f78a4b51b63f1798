import type { Sql, TransactionSql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { anonClaims, asClaims, newUser, serviceClaims, userClaims, type Claims } from '../support/claims.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { addMember, newConnection, newDeviceTree, newSite } from '../support/factories.ts';

/**
 * Who can read and write what, with JWT claims set the way PostgREST and Supabase Realtime set
 * them (`set local role …` + `request.jwt.claims`).
 */

const USER_TABLES = [
  'site',
  'mqtt_connection',
  'mqtt_topic',
  'discovered_topic',
  'gateway',
  'datalogger',
  'sensor',
  'sensor_reading',
  'mqtt_connection_log',
  'mqtt_parsing_log',
  'mqtt_parsing_log_topic',
] as const;

let db: TestDatabase;
let siteA: { id: string; slug: string };
let siteB: { id: string; slug: string };
let connA: { id: string };
let connB: { id: string };
const who: Record<'member' | 'nonMember' | 'admin', Claims> = {} as never;
let memberId: string;

/** Row count of a table as a role, or the SQLSTATE when the role may not read it at all. */
async function visibleRows(sql: Sql, claims: Claims, table: string): Promise<number | string> {
  return asClaims(sql, claims, async (tx) => {
    try {
      const [row] = await tx<{ n: number }[]>`select count(*)::int as n from ${tx(table)}`;
      return row!.n;
    } catch (err) {
      return (err as { code: string }).code;
    }
  });
}

/** Runs a write as a role; returns the affected row count or the SQLSTATE of the refusal. */
async function tryWrite(sql: Sql, claims: Claims, write: (tx: TransactionSql) => Promise<{ count: number }>) {
  return asClaims(sql, claims, async (tx) => {
    try {
      return (await write(tx)).count;
    } catch (err) {
      return (err as { code: string }).code;
    }
  });
}

const PERMISSION_DENIED = '42501';

beforeAll(async () => {
  db = await createTestDatabase();
  const { sql } = db;
  siteA = await newSite(sql);
  siteB = await newSite(sql);
  connA = await newConnection(sql, siteA.id);
  connB = await newConnection(sql, siteB.id);
  memberId = await newUser(sql);
  const nonMemberId = await newUser(sql);
  const adminId = await newUser(sql);
  await addMember(sql, siteA.id, memberId);
  who.member = userClaims(memberId);
  who.nonMember = userClaims(nonMemberId);
  who.admin = userClaims(adminId, { admin: true });

  for (const [site, conn] of [
    [siteA, connA],
    [siteB, connB],
  ] as const) {
    await sql`select set_mqtt_connection_secret(${conn.id}, 'broker-password', null, 'PRIVATE KEY', null)`;
    const [topic] = await sql<{ id: string }[]>`
      insert into mqtt_topic (connection_id, pattern, parser) values (${conn.id}, '+site/gateway/+gateway/status', 'bfg.gateway-status.v1')
      returning id`;
    await sql`insert into discovered_topic (connection_id, topic, message_count, is_processable, matched_topic_id)
              values (${conn.id}, ${`${site.slug}/gateway/gw-1/status`}, 3, true, ${topic!.id})`;
    await sql`insert into mqtt_connection_log (connection_id, event, status, detail) values (${conn.id}, 'status', 'connected', 'ok')`;
    await sql`insert into mqtt_parsing_log (connection_id, topic, parser, kind, message, fingerprint)
              values (${conn.id}, 'x/y', 'bfg.datalogger-data.v1', 'schema', 'ts: required', 'f1')`;
    await sql`insert into mqtt_parsing_log_topic (parsing_log_id, connection_id, topic, count, first_seen_at, last_seen_at)
              select id, connection_id, topic, 1, now(), now() from mqtt_parsing_log where connection_id = ${conn.id}`;
    await sql`insert into mqtt_message_archive (connection_id, topic, payload) values (${conn.id}, 'x/y', '\\x00ff')`;
    await newDeviceTree(sql, site.id);
  }
});

afterAll(async () => {
  await db.drop();
});

describe('reading', () => {
  it('anon reads nothing', async () => {
    for (const table of [...USER_TABLES, 'site_member', 'mqtt_message_archive', 'mqtt_connection_secret']) {
      const seen = await visibleRows(db.sql, anonClaims, table);
      expect([0, PERMISSION_DENIED], `anon on ${table}`).toContain(seen);
    }
  });

  it('a member reads their site and everything below it, nothing of other sites', async () => {
    for (const table of USER_TABLES) {
      expect(await visibleRows(db.sql, who.member, table), `member on ${table}`).toBe(1);
    }
    const sites = await asClaims(db.sql, who.member, (tx) => tx<{ id: string }[]>`select id from site`);
    expect(sites.map((s) => s.id)).toEqual([siteA.id]);
    expect(await visibleRows(db.sql, who.member, 'site_member')).toBe(1);
    expect(await visibleRows(db.sql, who.member, 'mqtt_message_archive')).toBe(0);
  });

  it('a member of an inactive site no longer sees it', async () => {
    await db.sql`update site set is_active = false where id = ${siteA.id}`;
    try {
      expect(await visibleRows(db.sql, who.member, 'site')).toBe(0);
      expect(await visibleRows(db.sql, who.member, 'sensor_reading')).toBe(0);
    } finally {
      await db.sql`update site set is_active = true where id = ${siteA.id}`;
    }
  });

  it('a non-member reads nothing', async () => {
    for (const table of [...USER_TABLES, 'site_member', 'mqtt_message_archive']) {
      expect(await visibleRows(db.sql, who.nonMember, table), `non-member on ${table}`).toBe(0);
    }
  });

  it('an admin reads every site', async () => {
    for (const table of USER_TABLES) {
      expect(await visibleRows(db.sql, who.admin, table), `admin on ${table}`).toBe(2);
    }
    expect(await visibleRows(db.sql, who.admin, 'mqtt_message_archive')).toBe(2);
  });

  it('only service_role reads broker secrets', async () => {
    for (const claims of [anonClaims, who.member, who.nonMember, who.admin]) {
      expect(await visibleRows(db.sql, claims, 'mqtt_connection_secret'), `role ${claims.role}`).toBe(
        PERMISSION_DENIED,
      );
    }
    expect(await visibleRows(db.sql, serviceClaims, 'mqtt_connection_secret')).toBe(2);
    const [secret] = await asClaims(
      db.sql,
      serviceClaims,
      (tx) => tx<{ password: string }[]>`select password from mqtt_connection_secret where connection_id = ${connA.id}`,
    );
    expect(secret!.password).toBe('broker-password');
  });

  it('no API role reads the realtime change outbox or clock, and only service_role may send site changes', async () => {
    await db.sql`select private.send_site_changes(0)`;
    await db.sql`update sensor set last_value = 1 where site_id = ${siteA.id}`;
    for (const claims of [anonClaims, who.member, who.nonMember, who.admin]) {
      for (const table of ['private.site_change_outbox', 'private.site_broadcast_clock']) {
        expect(await visibleRows(db.sql, claims, table), `${claims.role} on ${table}`).toBe(PERMISSION_DENIED);
      }
      expect(
        await tryWrite(db.sql, claims, (tx) => tx`select private.send_site_changes(0)`),
        `${claims.role} sending`,
      ).toBe(PERMISSION_DENIED);
    }
    expect(await visibleRows(db.sql, serviceClaims, 'private.site_change_outbox')).toBe(1);
    expect(await visibleRows(db.sql, serviceClaims, 'private.site_broadcast_clock')).toBe(2);
    expect(await tryWrite(db.sql, serviceClaims, (tx) => tx`select private.send_site_changes(0)`)).toBe(1);
  });

  it('no API role can read secrets through a function or a partition either', async () => {
    const presence = await asClaims(
      db.sql,
      who.member,
      (tx) => tx`select * from mqtt_connection_secret_presence(${connA.id})`,
    );
    expect(presence).toEqual([
      { has_password: true, has_client_cert: false, has_client_key: true, has_ca_cert: false },
    ]);
    expect(
      await asClaims(db.sql, who.nonMember, (tx) => tx`select * from mqtt_connection_secret_presence(${connA.id})`),
    ).toEqual([]);
    expect(await visibleRows(db.sql, who.admin, 'sensor_reading_default')).toBe(PERMISSION_DENIED);
    const partitions = await db.sql<{ name: string }[]>`
      select c.relname as name from pg_inherits i join pg_class c on c.oid = i.inhrelid
      where i.inhparent = 'public.sensor_reading'::regclass`;
    expect(partitions.length).toBeGreaterThanOrEqual(2);
    for (const { name } of partitions) {
      expect(await visibleRows(db.sql, who.member, name), name).toBe(PERMISSION_DENIED);
    }
  });
});

describe('writing', () => {
  const activate = (connId: string) => (tx: TransactionSql) =>
    tx`update mqtt_connection set is_active = true where id = ${connId}`;

  it('admins start and stop connections and change settings; members and others cannot', async () => {
    expect(await tryWrite(db.sql, who.admin, activate(connA.id))).toBe(1);
    expect(
      await tryWrite(
        db.sql,
        who.admin,
        (tx) =>
          tx`update mqtt_connection set host = 'broker.local', port = 8883, protocol = 'mqtts' where id = ${connB.id}`,
      ),
    ).toBe(1);
    // RLS hides the rows from the update: nothing changes.
    expect(await tryWrite(db.sql, who.member, activate(connA.id))).toBe(0);
    expect(await tryWrite(db.sql, who.nonMember, activate(connA.id))).toBe(0);
    expect(await tryWrite(db.sql, anonClaims, activate(connA.id))).toBe(PERMISSION_DENIED);
  });

  it('the observed status columns belong to the ingestor (service_role), not to admins', async () => {
    const setStatus = (tx: TransactionSql) =>
      tx`update mqtt_connection set status = 'connected' where id = ${connA.id}`;
    expect(await tryWrite(db.sql, who.admin, setStatus)).toBe(PERMISSION_DENIED);
    expect(await tryWrite(db.sql, serviceClaims, setStatus)).toBe(1);
    // What the broker session holds is observed too: only the ingestor records it.
    const setSession = (tx: TransactionSql) =>
      tx`update mqtt_connection set session_filters = '{x/#}' where id = ${connA.id}`;
    expect(await tryWrite(db.sql, who.admin, setSession)).toBe(PERMISSION_DENIED);
    expect(await tryWrite(db.sql, serviceClaims, setSession)).toBe(1);
    const createWithSession = (tx: TransactionSql) =>
      tx`insert into mqtt_connection (site_id, host, session_filters) values (${siteB.id}, 'h', '{x/#}')`;
    expect(await tryWrite(db.sql, who.admin, createWithSession)).toBe(PERMISSION_DENIED);
  });

  it('admins manage sites, memberships and topic patterns; members cannot', async () => {
    const addSite = (tx: TransactionSql) => tx`insert into site (slug, name) values ('new-site', 'New')`;
    const addPattern = (tx: TransactionSql) =>
      tx`insert into mqtt_topic (connection_id, pattern, parser) values (${connA.id}, 'a/#rest', 'generic-json')`;
    const disablePatterns = (tx: TransactionSql) =>
      tx`update mqtt_topic set is_active = false where connection_id = ${connA.id}`;
    expect(await tryWrite(db.sql, who.admin, addSite)).toBe(1);
    expect(await tryWrite(db.sql, who.admin, addPattern)).toBe(1);
    expect(await tryWrite(db.sql, who.admin, disablePatterns)).toBe(1);
    expect(
      await tryWrite(
        db.sql,
        who.admin,
        (tx) => tx`insert into site_member (site_id, user_id) values (${siteB.id}, ${memberId})`,
      ),
    ).toBe(1);
    expect(await tryWrite(db.sql, who.member, addSite)).toBe(PERMISSION_DENIED);
    expect(await tryWrite(db.sql, who.member, addPattern)).toBe(PERMISSION_DENIED);
    expect(await tryWrite(db.sql, who.member, disablePatterns)).toBe(0);
    expect(
      await tryWrite(
        db.sql,
        who.member,
        (tx) => tx`insert into site_member (site_id, user_id) values (${siteB.id}, ${memberId})`,
      ),
    ).toBe(PERMISSION_DENIED);
  });

  it('devices, readings and logs are written by the ingestor only', async () => {
    for (const claims of [who.admin, who.member]) {
      expect(await tryWrite(db.sql, claims, (tx) => tx`update gateway set online = false`)).toBe(PERMISSION_DENIED);
      expect(
        await tryWrite(
          db.sql,
          claims,
          (tx) => tx`insert into sensor_reading (sensor_id, ts, value) values (1, now(), 1)`,
        ),
      ).toBe(PERMISSION_DENIED);
      expect(await tryWrite(db.sql, claims, (tx) => tx`delete from mqtt_parsing_log`)).toBe(PERMISSION_DENIED);
      expect(await tryWrite(db.sql, claims, (tx) => tx`update mqtt_parsing_log_topic set count = 9`)).toBe(
        PERMISSION_DENIED,
      );
    }
    expect(await tryWrite(db.sql, serviceClaims, (tx) => tx`update gateway set online = false`)).toBe(2);
  });

  it('admins write secrets without being able to read them back; others cannot write them', async () => {
    const setPassword = (tx: TransactionSql) =>
      tx`select set_mqtt_connection_secret(${connA.id}, 'rotated') as done`.then((rows) => ({ count: rows.length }));
    expect(await tryWrite(db.sql, who.admin, setPassword)).toBe(1);
    expect(await tryWrite(db.sql, who.member, setPassword)).toBe(PERMISSION_DENIED);
    expect(await tryWrite(db.sql, anonClaims, setPassword)).toBe(PERMISSION_DENIED);
    // As an authenticated session without the admin claim, even with no claims at all.
    const noClaims = await db.sql
      .begin(async (tx) => {
        await tx`set local role authenticated`;
        await tx`select set_mqtt_connection_secret(${connA.id}, 'x')`;
        return 'allowed';
      })
      .catch((err: { code: string }) => err.code);
    expect(noClaims).toBe(PERMISSION_DENIED);
  });
});
