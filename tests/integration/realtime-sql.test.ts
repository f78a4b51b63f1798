import postgres, { type Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newUser, userClaims } from '../support/claims.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { addMember, newDeviceTree, newSite } from '../support/factories.ts';

/**
 * The realtime SQL surface: realtime.send / realtime.broadcast_changes write the rows Supabase's
 * do, the device triggers broadcast one message per site per statement, and Realtime
 * Authorization's policies admit exactly the site's members to `site:<id>`.
 */

interface MessageRow {
  topic: string;
  extension: string;
  event: string;
  private: boolean;
  payload: Record<string, unknown>;
  id: string;
}

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db.drop();
});

/** This file's database is its own and its tests run in order, so they can start from an empty table. */
async function clearMessages(sql: Sql): Promise<void> {
  await sql`delete from realtime.messages`;
}

async function allMessages(sql: Sql): Promise<MessageRow[]> {
  return sql<MessageRow[]>`
    select topic, extension, event, private, payload, id::text as id
    from realtime.messages order by inserted_at, topic`;
}

describe('realtime.send', () => {
  it('inserts a broadcast message, adding the message id to a payload without one', async () => {
    await clearMessages(db.sql);
    await db.sql`select realtime.send(${db.sql.json({ hello: 'world' })}, 'greeting', 'room:1', false)`;
    await db.sql`select realtime.send(${db.sql.json({ id: 'mine' })}, 'greeting', 'room:2')`;
    const rows = await allMessages(db.sql);
    expect(rows).toHaveLength(2);
    expect(rows[0]).toMatchObject({ topic: 'room:1', extension: 'broadcast', event: 'greeting', private: false });
    expect(rows[0]!.payload).toEqual({ hello: 'world', id: rows[0]!.id });
    // `private` defaults to true, and an id already in the payload is kept.
    expect(rows[1]).toMatchObject({ topic: 'room:2', private: true, payload: { id: 'mine' } });
  });

  it('never fails the caller: a failed insert becomes a WARNING and nothing is written', async () => {
    const notices: { severity: string; message: string }[] = [];
    const sql = postgres(db.url, { max: 1, onnotice: (notice) => notices.push({ severity: notice['severity']!, message: notice['message']! }) });
    try {
      await clearMessages(sql);
      // realtime.messages.topic is NOT NULL, so this insert fails inside realtime.send.
      await sql`select realtime.send('{}'::jsonb, 'e', null)`;
      expect(await allMessages(sql)).toEqual([]);
      expect(notices.map((n) => n.severity)).toEqual(['WARNING']);
      expect(notices[0]!.message).toMatch(/^ErrorSendingBroadcastMessage: /);
    } finally {
      await sql.end();
    }
  });
});

describe('realtime.broadcast_changes', () => {
  it('sends {old_record, record, operation, table, schema} from a row trigger', async () => {
    await db.sql`create table public.note (id int primary key, body text)`;
    await db.sql`
      create function public.note_broadcast() returns trigger language plpgsql as $$
      begin
        perform realtime.broadcast_changes('notes', tg_op, tg_op, tg_table_name, tg_table_schema, new, old);
        return null;
      end $$`;
    await db.sql`create trigger note_broadcast after insert or update or delete on public.note
                 for each row execute function public.note_broadcast()`;
    await clearMessages(db.sql);
    await db.sql`insert into public.note values (1, 'a')`;
    await db.sql`update public.note set body = 'b' where id = 1`;
    await db.sql`delete from public.note where id = 1`;
    const rows = await allMessages(db.sql);
    expect(rows.map((r) => [r.topic, r.event, r.private])).toEqual([
      ['notes', 'INSERT', true],
      ['notes', 'UPDATE', true],
      ['notes', 'DELETE', true],
    ]);
    const strip = ({ id: _id, ...rest }: Record<string, unknown>) => rest;
    expect(rows.map((r) => strip(r.payload))).toEqual([
      { operation: 'INSERT', table: 'note', schema: 'public', record: { id: 1, body: 'a' }, old_record: null },
      { operation: 'UPDATE', table: 'note', schema: 'public', record: { id: 1, body: 'b' }, old_record: { id: 1, body: 'a' } },
      { operation: 'DELETE', table: 'note', schema: 'public', record: null, old_record: { id: 1, body: 'b' } },
    ]);
  });
});

describe('device broadcasts', () => {
  it('send one message per site per statement, with only the rows that changed', async () => {
    const siteA = await newSite(db.sql);
    const siteB = await newSite(db.sql);
    const treeA = await newDeviceTree(db.sql, siteA.id);
    await newDeviceTree(db.sql, siteB.id);

    await clearMessages(db.sql);
    // One statement updating sensors of both sites, like an ingestor flush.
    await db.sql`update sensor set last_value = 22.5, last_value_at = now() where site_id in (${siteA.id}, ${siteB.id})`;
    // A no-op update sends nothing.
    await db.sql`update sensor set last_value = last_value where site_id = ${siteA.id}`;
    const rows = await allMessages(db.sql);
    expect(rows.map((r) => [r.topic, r.event, r.private]).sort()).toEqual([
      [`site:${siteA.id}`, 'sensor_changed', true],
      [`site:${siteB.id}`, 'sensor_changed', true],
    ]);
    const forA = rows.find((r) => r.topic === `site:${siteA.id}`)!;
    expect(forA.payload).toMatchObject({ table: 'sensor', op: 'UPDATE' });
    expect(forA.payload['rows']).toMatchObject([{ id: Number(treeA.sensorId), last_value: 22.5 }]);
  });
});

describe('Realtime Authorization on realtime.messages', () => {
  /**
   * What Realtime does on a private join: it writes a probe message for the topic with its own
   * (privileged) role, then, as the user with their claims and realtime.topic set, checks whether
   * the policies let them read it; everything is rolled back.
   */
  async function mayJoin(claims: ReturnType<typeof userClaims>, topic: string): Promise<boolean> {
    const rollback = new Error('rollback');
    let allowed = false;
    await db.sql
      .begin(async (tx) => {
        const [probe] = await tx<{ id: string }[]>`
          insert into realtime.messages (topic, extension, event, payload, private)
          values (${topic}, 'broadcast', 'probe', '{}', true) returning id`;
        await tx`select set_config('role', ${claims.role}, true),
                        set_config('request.jwt.claims', ${JSON.stringify(claims)}, true),
                        set_config('realtime.topic', ${topic}, true)`;
        allowed = (await tx`select 1 from realtime.messages where id = ${probe!.id}`).length === 1;
        throw rollback;
      })
      .catch((err: unknown) => {
        if (err !== rollback) throw err;
      });
    return allowed;
  }

  it('admits a site member and admins to site:<id>, and nobody else', async () => {
    const site = await newSite(db.sql);
    const other = await newSite(db.sql);
    const member = await newUser(db.sql);
    await addMember(db.sql, site.id, member);
    const admin = userClaims(await newUser(db.sql), { admin: true });

    expect(await mayJoin(userClaims(member), `site:${site.id}`)).toBe(true);
    expect(await mayJoin(userClaims(member), `site:${other.id}`)).toBe(false);
    expect(await mayJoin(userClaims(await newUser(db.sql)), `site:${site.id}`)).toBe(false);
    expect(await mayJoin(admin, `site:${other.id}`)).toBe(true);
    expect(await mayJoin(admin, 'anything-else')).toBe(false);
  });
});
