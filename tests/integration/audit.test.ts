import type { TransactionSql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser } from '@bfg/local';
import { auditedTables } from '../../web/src/lib/rows.ts';
import { listAudit } from '../../web/src/lib/server/queries/audit.ts';
import { anonClaims, asClaims, newUser, serviceClaims, userClaims, type Claims } from '../support/claims.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { addMember, newConnection, newSite } from '../support/factories.ts';

/**
 * The audit trail (issue 13): triggers record every change to sites, memberships, connections,
 * their secrets, topic patterns and accounts — through the API with the JWT's subject and e-mail,
 * from SQL with the database user — with the changed columns' old and new values, secrets only as
 * set / changed / cleared. Admins alone may read it, and nobody may write it but the triggers.
 */

let db: TestDatabase;
let admin: Claims;
let member: Claims;
let adminId: string;

interface AuditEntry {
  actor: string;
  actor_sub: string | null;
  actor_email: string | null;
  actor_role: string | null;
  db_user: string;
  table_name: string;
  op: string;
  row_id: string;
  site_id: string | null;
  label: string | null;
  changes: Record<string, Record<string, unknown>>;
  txid: string;
}

/** The trail's rows since `sinceId`, oldest first. */
async function entriesSince(sinceId: number): Promise<AuditEntry[]> {
  return db.sql<AuditEntry[]>`select * from audit_log where id > ${sinceId} order by id`;
}
async function lastId(): Promise<number> {
  const [row] = await db.sql<{ id: string | null }[]>`select max(id) as id from audit_log`;
  return Number(row!.id ?? 0);
}
const commit = <T>(claims: Claims, fn: (tx: TransactionSql) => Promise<T>) =>
  asClaims(db.sql, claims, fn, { commit: true });

beforeAll(async () => {
  db = await createTestDatabase();
  adminId = await newUser(db.sql);
  admin = { ...userClaims(adminId, { admin: true }), email: 'Admin@Example.test' };
  member = userClaims(await newUser(db.sql));
});
afterAll(async () => {
  await db?.drop();
});

describe('who and what', () => {
  it('records a change through the API with the JWT subject, e-mail and role, and only the columns that changed', async () => {
    const site = await newSite(db.sql, { name: 'Before' });
    const since = await lastId();
    await commit(
      admin,
      (tx) => tx`update site set name = 'After', description = 'now described' where id = ${site.id}`,
    );
    const [entry, ...more] = await entriesSince(since);
    expect(more).toEqual([]);
    expect(entry).toMatchObject({
      actor: 'admin@example.test',
      actor_sub: adminId,
      actor_email: 'admin@example.test',
      actor_role: 'authenticated',
      table_name: 'site',
      op: 'UPDATE',
      row_id: site.id,
      site_id: site.id,
      label: site.slug,
      changes: { name: { old: 'Before', new: 'After' }, description: { old: null, new: 'now described' } },
    });
    // updated_at changed too, and is not a change anyone made.
    expect(Object.keys(entry!.changes).sort()).toEqual(['description', 'name']);
  });

  it('records a change made in SQL (psql, Studio) with the database user, exactly like the dashboard’s', async () => {
    const site = await newSite(db.sql);
    const since = await lastId();
    await db.sql`update site set is_active = false where id = ${site.id}`;
    const [entry] = await entriesSince(since);
    const [{ user }] = await db.sql<[{ user: string }]>`select session_user as user`;
    expect(entry).toMatchObject({
      actor: user,
      actor_sub: null,
      actor_email: null,
      db_user: user,
      op: 'UPDATE',
      changes: { is_active: { old: true, new: false } },
    });
  });

  it('records inserts with their values and deletes with what was deleted, a cascade in one transaction', async () => {
    const since = await lastId();
    const site = await newSite(db.sql, { slug: 'audited-cascade', name: 'Cascade' });
    const conn = await newConnection(db.sql, site.id, { host: 'broker.example', port: 8883 });
    const [pattern] = await db.sql<{ id: string }[]>`
      insert into mqtt_topic (connection_id, pattern, parser) values (${conn.id}, 'audited-cascade/#', 'generic-json') returning id`;
    await addMember(db.sql, site.id, adminId);
    const created = await entriesSince(since);
    expect(created.map((e) => [e.table_name, e.op])).toEqual([
      ['site', 'INSERT'],
      ['mqtt_connection', 'INSERT'],
      ['mqtt_topic', 'INSERT'],
      ['site_member', 'INSERT'],
    ]);
    expect(created[0]!.changes).toMatchObject({ slug: { new: 'audited-cascade' }, name: { new: 'Cascade' } });
    expect(created[1]).toMatchObject({ label: 'audited-cascade mqtt://broker.example:8883', site_id: site.id });
    expect(created[1]!.changes['host']).toEqual({ new: 'broker.example' });
    expect(created[2]).toMatchObject({
      row_id: pattern!.id,
      label: 'audited-cascade/# → generic-json',
      site_id: site.id,
    });
    expect(created[3]).toMatchObject({
      row_id: `${site.id}/${adminId}`,
      label: `${adminId}@example.test in audited-cascade`,
    });

    await db.sql`select set_mqtt_connection_secret(${conn.id}, 'cascade-password', null, null, null)`;
    const before = await lastId();
    await db.sql`delete from site where id = ${site.id}`;
    const deleted = await entriesSince(before);
    expect(deleted.map((e) => [e.table_name, e.op]).sort()).toEqual(
      [
        ['mqtt_connection', 'DELETE'],
        ['mqtt_connection_secret', 'DELETE'],
        ['mqtt_topic', 'DELETE'],
        ['site', 'DELETE'],
        ['site_member', 'DELETE'],
      ].sort(),
    );
    expect(new Set(deleted.map((e) => e.txid)).size).toBe(1);
    // Rows that went with their connection still name the site (the Audit page filters by it).
    expect(deleted.map((e) => [e.table_name, e.site_id])).toEqual(deleted.map((e) => [e.table_name, site.id]));
    expect(deleted.find((e) => e.table_name === 'mqtt_connection_secret')!.changes).toEqual({
      connection_id: { old: Number(conn.id) },
      password: { secret: 'cleared' },
    });
    expect(deleted.find((e) => e.table_name === 'site')!.changes['name']).toEqual({ old: 'Cascade' });
  });

  it("leaves no row for the ingestor's own writes: status, last message, session filters, leases", async () => {
    const site = await newSite(db.sql);
    const conn = await newConnection(db.sql, site.id);
    const since = await lastId();
    await db.sql`
      update mqtt_connection set status = 'connected', status_detail = 'connected', last_connected_at = now(),
        last_message_at = now(), session_filters = '{x/#}', owner_instance = 'i-1', lease_expires_at = now()
      where id = ${conn.id}`;
    expect(await entriesSince(since)).toEqual([]);
    // Desired state is a change someone made.
    await commit(admin, (tx) => tx`update mqtt_connection set is_active = true where id = ${conn.id}`);
    expect((await entriesSince(since)).map((e) => e.changes)).toEqual([{ is_active: { old: false, new: true } }]);
  });
});

describe('secrets', () => {
  it('records that a secret was set, changed or removed — never its value', async () => {
    const site = await newSite(db.sql);
    const conn = await newConnection(db.sql, site.id);
    const since = await lastId();
    const password = 'audit-secret-password-1';
    const key = '-----BEGIN PRIVATE KEY-----audit-secret-key-----END PRIVATE KEY-----';
    await commit(admin, (tx) => tx`select set_mqtt_connection_secret(${conn.id}, ${password}, null, ${key}, null)`);
    await commit(
      admin,
      (tx) => tx`select set_mqtt_connection_secret(${conn.id}, 'audit-secret-password-2', null, null, null)`,
    );
    await db.sql`select set_mqtt_connection_secret(${conn.id}, null, null, '', null)`;
    const entries = await entriesSince(since);
    expect(entries.map((e) => [e.table_name, e.op, e.actor])).toEqual([
      ['mqtt_connection_secret', 'INSERT', 'admin@example.test'],
      ['mqtt_connection_secret', 'UPDATE', 'admin@example.test'],
      ['mqtt_connection_secret', 'UPDATE', entries[2]!.db_user],
    ]);
    expect(entries.map((e) => e.changes)).toEqual([
      { connection_id: { new: Number(conn.id) }, password: { secret: 'set' }, client_key: { secret: 'set' } },
      { password: { secret: 'changed' } },
      { client_key: { secret: 'cleared' } },
    ]);
    const all = JSON.stringify(await db.sql`select * from audit_log`);
    for (const value of [password, 'audit-secret-password-2', 'audit-secret-key']) expect(all).not.toContain(value);
  });

  it('records account changes made by the Auth server (the local stand-in’s admin code), the password only as changed', async () => {
    const since = await lastId();
    const email = 'audited-account@example.test';
    const { id } = await addUser(db.sql, { email, password: 'first-password-123', role: 'member' });
    await addUser(db.sql, { email, password: 'second-password-456', role: 'admin' });
    await db.sql`update auth.users set last_sign_in_at = now() where id = ${id}`;
    await db.sql`update auth.users set banned_until = now() + interval '100 years' where id = ${id}`;
    const entries = (await entriesSince(since)).filter((e) => e.table_name === 'auth.users');
    expect(entries.map((e) => e.op)).toEqual(['INSERT', 'UPDATE', 'UPDATE']);
    expect(entries[0]).toMatchObject({ row_id: id, label: email });
    expect(entries[0]!.changes['encrypted_password']).toEqual({ secret: 'set' });
    expect(entries[1]!.changes['encrypted_password']).toEqual({ secret: 'changed' });
    expect(entries[1]!.changes['raw_app_meta_data']!['new']).toMatchObject({ role: 'admin' });
    expect(Object.keys(entries[2]!.changes)).toEqual(['banned_until']);
    const [{ hash }] = await db.sql<
      [{ hash: string }]
    >`select encrypted_password as hash from auth.users where id = ${id}`;
    expect(JSON.stringify(await db.sql`select * from audit_log`)).not.toContain(hash.split('$').at(-1));
  });
});

describe('access', () => {
  it('shows the trail to admins only (the dashboard’s own query), and nobody may write it through the API', async () => {
    const site = await newSite(db.sql);
    await db.sql`update site set name = 'visible to admins' where id = ${site.id}`;
    const page = (claims: Claims) =>
      asClaims(db.sql, claims, (tx) =>
        listAudit(tx, { table: 'site', actor: '', siteId: Number(site.id), rowId: '', limit: 10, before: null }),
      );
    expect((await page(admin)).rows.map((r) => r.op)).toEqual(['UPDATE', 'INSERT']);
    expect((await page(member)).rows).toEqual([]);
    const selfMadeAdmin = { ...member, user_metadata: { role: 'admin' } } as Claims;
    expect((await page(selfMadeAdmin)).rows).toEqual([]);

    for (const claims of [anonClaims, member, admin, serviceClaims]) {
      for (const write of [
        (tx: TransactionSql) =>
          tx`insert into audit_log (db_user, table_name, op, row_id, changes) values ('x', 'site', 'UPDATE', '1', '{}')`,
        (tx: TransactionSql) => tx`update audit_log set label = 'forged'`,
        (tx: TransactionSql) => tx`delete from audit_log`,
      ]) {
        const outcome = await asClaims(db.sql, claims, async (tx) => {
          try {
            return (await write(tx)).count;
          } catch (err) {
            return (err as { code?: string }).code;
          }
        });
        expect(outcome, `${claims.role} ${String(write)}`).toBe('42501');
      }
    }
    const anonymous = await asClaims(db.sql, anonClaims, async (tx) => {
      try {
        return await tx`select count(*) from audit_log`;
      } catch (err) {
        return (err as { code?: string }).code;
      }
    });
    expect(anonymous).toBe('42501');
  });

  it('pages newest first by keyset, filtered by who and by row', async () => {
    const site = await newSite(db.sql);
    for (let i = 0; i < 5; i++)
      await commit(admin, (tx) => tx`update site set name = ${`page ${i}`} where id = ${site.id}`);
    const filter = { table: 'site' as const, actor: 'ADMIN@example.test', siteId: null, rowId: site.id, limit: 2 };
    const first = await asClaims(db.sql, admin, (tx) => listAudit(tx, { ...filter, before: null }));
    const second = await asClaims(db.sql, admin, (tx) => listAudit(tx, { ...filter, before: first.next }));
    const third = await asClaims(db.sql, admin, (tx) => listAudit(tx, { ...filter, before: second.next }));
    const names = [...first.rows, ...second.rows, ...third.rows].map((r) => (r.changes['name'] as { new: string }).new);
    expect(names).toEqual(['page 4', 'page 3', 'page 2', 'page 1', 'page 0']);
    expect(third.next).toBeNull();
  });
});

describe('what is audited', () => {
  // Columns of the audited tables the trail leaves out on purpose: identity, timestamps the
  // database keeps, and what the ingestor observes and writes. A column in neither list fails
  // here: decide whether it is a change someone makes (add it to private.audit_columns) or not.
  const leftOut: Record<string, string[]> = {
    site: ['id', 'created_at', 'updated_at'],
    site_member: ['created_at'],
    mqtt_connection: [
      'id',
      'created_at',
      'updated_at',
      'status',
      'status_detail',
      'status_changed_at',
      'last_connected_at',
      'last_message_at',
      'owner_instance',
      'lease_expires_at',
      'lease_epoch',
      'session_filters',
    ],
    mqtt_connection_secret: ['updated_at'],
    mqtt_topic: ['id', 'created_at', 'updated_at'],
  };

  it('decides for every column of every audited table of ours', async () => {
    for (const [table, ignored] of Object.entries(leftOut)) {
      const [{ value_columns, secret_columns }] = await db.sql<[{ value_columns: string[]; secret_columns: string[] }]>`
        select * from private.audit_columns(${table})`;
      const columns = await db.sql<{ name: string }[]>`
        select column_name as name from information_schema.columns where table_schema = 'public' and table_name = ${table}`;
      const undecided = columns
        .map((c) => c.name)
        .filter((c) => !value_columns.includes(c) && !secret_columns.includes(c) && !ignored.includes(c));
      expect(undecided, table).toEqual([]);
    }
  });

  it('names the same tables as the dashboard', async () => {
    const [{ def }] = await db.sql<[{ def: string }]>`
      select pg_get_constraintdef(oid) as def from pg_constraint where conname = 'audit_log_table_check'`;
    const inCheck = [...def.matchAll(/'([a-z_.]+)'::text/g)].map((m) => m[1]);
    expect([...inCheck].sort()).toEqual([...auditedTables].sort());
    const triggers = await db.sql<{ name: string }[]>`
      select distinct event_object_schema || '.' || event_object_table as name
      from information_schema.triggers where action_statement like '%audit_row_change%'`;
    expect(triggers.map((t) => t.name.replace(/^public\./, '')).sort()).toEqual([...auditedTables].sort());
  });
});
