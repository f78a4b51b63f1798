import postgres, { type Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newUser, userClaims } from '../support/claims.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { addMember, newConnection, newDeviceTree, newSite } from '../support/factories.ts';
import { waitFor } from '../support/wait-for.ts';
import { siteChanges, type SiteChanges } from '../../web/src/lib/live/site-changes.ts';
import { dataloggerRow, gatewayRow, sensorRow } from '../../web/src/lib/rows.ts';

/**
 * The realtime SQL surface: realtime.send / realtime.broadcast_changes write the rows Supabase's
 * do; device, topic and parsing-log writes are recorded in the change outbox and sent by
 * private.send_site_changes as one `changes` message per site per interval, with the rows as they
 * are; Realtime Authorization's policies admit exactly the site's members to `site:<id>`.
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
    const sql = postgres(db.url, {
      max: 1,
      onnotice: (notice) => notices.push({ severity: notice['severity']!, message: notice['message']! }),
    });
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
      {
        operation: 'UPDATE',
        table: 'note',
        schema: 'public',
        record: { id: 1, body: 'b' },
        old_record: { id: 1, body: 'a' },
      },
      { operation: 'DELETE', table: 'note', schema: 'public', record: null, old_record: { id: 1, body: 'b' } },
    ]);
  });
});

describe('site change broadcasts', () => {
  interface ChangesMessage {
    event: string;
    private: boolean;
    payload: SiteChanges;
    at: number;
  }

  /** One run of the flusher the ingestor calls; ms until the next pending site is due, or null. */
  async function flush(sql: Sql, intervalMs: number): Promise<number | null> {
    const [row] = await sql<{ next: number | null }[]>`select private.send_site_changes(${intervalMs}) as next`;
    return row!.next;
  }

  /** Every message sent on the site's topic, oldest first, its payload checked with the web's own schema. */
  async function messagesOf(sql: Sql, siteId: string): Promise<ChangesMessage[]> {
    const rows = await sql<{ event: string; private: boolean; payload: unknown; at: number }[]>`
      select event, private, payload, extract(epoch from inserted_at)::float8 * 1000 as at
      from realtime.messages where topic = ${`site:${siteId}`} order by inserted_at, id`;
    return rows.map((r) => ({ ...r, payload: siteChanges.parse(r.payload) }));
  }

  const valueOf = (m: ChangesMessage, sensorId: string) =>
    m.payload.sensors.find((s) => s.id === Number(sensorId))?.last_value;

  it('sends nothing from the write itself; a lone change goes out at the first flush, with the shown columns of the rows as they are', async () => {
    const site = await newSite(db.sql);
    const tree = await newDeviceTree(db.sql, site.id);
    await db.sql`update sensor set last_value = 22.5, last_value_at = now() where id = ${tree.sensorId}`;
    expect(await messagesOf(db.sql, site.id)).toEqual([]);

    expect(await flush(db.sql, 60_000)).toBeNull();
    const [message, ...more] = await messagesOf(db.sql, site.id);
    expect(more).toEqual([]);
    expect(message).toMatchObject({ event: 'changes', private: true });
    const raw = (
      await db.sql<{ payload: Record<string, Record<string, unknown>[]> }[]>`
      select payload from realtime.messages where topic = ${`site:${site.id}`}`
    )[0]!.payload;
    // Exactly the columns the pages' row schemas read: the SQL list and web/src/lib/rows.ts agree.
    const keys = (rows: Record<string, unknown>[] | undefined) => Object.keys(rows?.[0] ?? {}).sort();
    expect(keys(raw['gateways'])).toEqual(Object.keys(gatewayRow.shape).sort());
    expect(keys(raw['dataloggers'])).toEqual(Object.keys(dataloggerRow.shape).sort());
    expect(keys(raw['sensors'])).toEqual(Object.keys(sensorRow.shape).sort());
    expect(message!.payload).toMatchObject({
      gateways: [{ id: Number(tree.gatewayId), ident: 'gw-1', online: true }],
      dataloggers: [{ id: Number(tree.dataloggerId), interval_s: 60 }],
      sensors: [{ id: Number(tree.sensorId), last_value: 22.5 }],
      removed: { gateways: [], dataloggers: [], sensors: [] },
      topics: [],
      parsing_log: [],
    });
  });

  it('coalesces a burst into at most 1 + elapsed × rate messages, each with the latest values', async () => {
    const intervalMs = 200;
    const site = await newSite(db.sql);
    const tree = await newDeviceTree(db.sql, site.id);
    const started = Date.now();
    const sentAfter: number[] = [];
    let value = 0;
    // ~1 s of statements, each followed by a flush, as the ingestor's nudges would do.
    while (Date.now() - started < 1_000) {
      value += 1;
      await db.sql`update sensor set last_value = ${value}, last_value_at = now() where id = ${tree.sensorId}`;
      const before = (await messagesOf(db.sql, site.id)).length;
      await flush(db.sql, intervalMs);
      if ((await messagesOf(db.sql, site.id)).length > before) sentAfter.push(value);
    }
    // The last changes wait for the next message, sent once the interval has passed.
    await waitFor(
      'the last change to be sent',
      async () => {
        await flush(db.sql, intervalMs);
        return (await messagesOf(db.sql, site.id)).at(-1);
      },
      { accept: (m) => m !== undefined && valueOf(m, tree.sensorId) === value },
    );
    const elapsedS = (Date.now() - started) / 1000;

    const messages = await messagesOf(db.sql, site.id);
    expect(value).toBeGreaterThan(messages.length * 2);
    expect(messages.length).toBeLessThanOrEqual(1 + elapsedS * (1000 / intervalMs));
    // Each message carries the value written last before it was sent, and the last one the final value.
    expect(messages.slice(0, sentAfter.length).map((m) => valueOf(m, tree.sensorId))).toEqual(sentAfter);
    expect(valueOf(messages.at(-1)!, tree.sensorId)).toBe(value);
    for (let i = 1; i < messages.length; i++) {
      expect(messages[i]!.at - messages[i - 1]!.at, `gap before message ${i}`).toBeGreaterThanOrEqual(intervalMs - 25);
    }
  });

  it('sends nothing for changes no page shows', async () => {
    const site = await newSite(db.sql);
    const tree = await newDeviceTree(db.sql, site.id);
    await flush(db.sql, 0);
    const sent = (await messagesOf(db.sql, site.id)).length;

    await db.sql`update gateway set uptime_s = 86400, status_at = now(), first_seen_at = now() - interval '1 day' where id = ${tree.gatewayId}`;
    await db.sql`update datalogger set serial = 'DL4-1', firmware = '1.9.0', info_at = now() where id = ${tree.dataloggerId}`;
    await db.sql`update sensor set first_seen_at = now() - interval '1 day', updated_at = now() where id = ${tree.sensorId}`;
    // A write that sets a shown column to the value it has is no change either.
    await db.sql`update sensor set last_value = last_value, kind = kind where id = ${tree.sensorId}`;
    expect(await db.sql`select * from private.site_change_outbox where site_id = ${site.id}`).toEqual([]);
    await flush(db.sql, 0);
    expect(await messagesOf(db.sql, site.id)).toHaveLength(sent);
  });

  it('records a device when any one shown column changes: the generated update triggers follow private.shown_columns', async () => {
    const site = await newSite(db.sql);
    const tree = await newDeviceTree(db.sql, site.id);
    const [spare] = await db.sql<{ gatewayId: string; dataloggerId: string }[]>`
      with g as (insert into gateway (site_id, ident) values (${site.id}, 'gw-spare') returning id)
      insert into datalogger (site_id, gateway_id, ident) select ${site.id}, g.id, 'dl-spare' from g
      returning gateway_id::text as "gatewayId", id::text as "dataloggerId"`;
    // One change per shown column but id and site_id (a move: the next test), each to a new value.
    const text = (column: string) => `coalesce(${column}, '') || 'x'`;
    const every = {
      ident: `ident || '-2'`,
      name: text('name'),
      presence: `case presence when 'online' then 'offline' else 'online' end`,
    };
    const changes: Record<string, Record<string, string>> = {
      gateway: {
        ...every,
        online: `not coalesce(online, false)`,
        firmware: text('firmware'),
        rssi_dbm: `coalesce(rssi_dbm, 0) - 1`,
        last_seen_at: `last_seen_at + interval '1 second'`,
      },
      datalogger: {
        ...every,
        gateway_id: spare!.gatewayId,
        model: text('model'),
        interval_s: `coalesce(interval_s, 0) + 1`,
        last_seen_at: `last_seen_at + interval '1 second'`,
      },
      sensor: {
        ...every,
        datalogger_id: spare!.dataloggerId,
        kind: text('kind'),
        unit: text('unit'),
        last_value: `coalesce(last_value, 0) + 1`,
        last_value_at: `coalesce(last_value_at, now()) + interval '1 second'`,
        last_quality: `case last_quality when 'good' then 'bad' else 'good' end`,
      },
    };
    const ids: Record<string, string> = {
      gateway: tree.gatewayId,
      datalogger: tree.dataloggerId,
      sensor: tree.sensorId,
    };
    for (const [table, byColumn] of Object.entries(changes)) {
      const [{ shown }] = await db.sql<[{ shown: string[] }]>`select private.shown_columns(${table}) as shown`;
      expect(Object.keys(byColumn).sort(), `${table}: a change for each shown column`).toEqual(
        shown.filter((c) => c !== 'id' && c !== 'site_id').sort(),
      );
      for (const [column, value] of Object.entries(byColumn)) {
        await db.sql`delete from private.site_change_outbox where site_id = ${site.id}`;
        await db.sql.unsafe(`update public.${table} set ${column} = ${value} where id = $1`, [ids[table]!]);
        const recorded = await db.sql`
          select 1 from private.site_change_outbox where site_id = ${site.id} and entity = ${table} and entity_id = ${ids[table]!}`;
        expect(recorded, `${table}.${column}`).toHaveLength(1);
      }
    }
  });

  it('sends a deleted device, and a device moved to another site, as removed', async () => {
    const site = await newSite(db.sql);
    const other = await newSite(db.sql);
    const tree = await newDeviceTree(db.sql, site.id);
    const target = await newDeviceTree(db.sql, other.id);
    const [extra] = await db.sql<{ id: string }[]>`
      insert into sensor (site_id, datalogger_id, ident) values (${site.id}, ${tree.dataloggerId}, 'rh') returning id`;
    await flush(db.sql, 0);
    const before = {
      site: (await messagesOf(db.sql, site.id)).length,
      other: (await messagesOf(db.sql, other.id)).length,
    };

    await db.sql`delete from sensor where id = ${tree.sensorId}`;
    await db.sql`update sensor set site_id = ${other.id}, datalogger_id = ${target.dataloggerId} where id = ${extra!.id}`;
    await flush(db.sql, 0);

    const here = (await messagesOf(db.sql, site.id)).slice(before.site);
    expect(here.map((m) => m.payload)).toEqual([
      {
        gateways: [],
        dataloggers: [],
        sensors: [],
        removed: {
          gateways: [],
          dataloggers: [],
          sensors: [Number(tree.sensorId), Number(extra!.id)].sort((a, b) => a - b),
        },
        topics: [],
        parsing_log: [],
      },
    ]);
    const there = (await messagesOf(db.sql, other.id)).slice(before.other);
    expect(there.map((m) => m.payload.sensors.map((s) => [s.id, s.site_id]))).toEqual([
      [[Number(extra!.id), Number(other.id)]],
    ]);
  });

  it('names the connections whose discovered topics or parsing log changed', async () => {
    const site = await newSite(db.sql);
    const connection = await newConnection(db.sql, site.id);
    await db.sql`insert into discovered_topic (connection_id, topic, message_count) values
                 (${connection.id}, 'a/1', 1), (${connection.id}, 'a/2', 1)`;
    await db.sql`update discovered_topic set message_count = message_count + 1 where connection_id = ${connection.id}`;
    await db.sql`insert into mqtt_parsing_log (connection_id, topic, kind, message, fingerprint)
                 values (${connection.id}, 'a/1', 'invalid_json', 'Unexpected end of JSON input', 'f')`;
    await flush(db.sql, 0);
    expect((await messagesOf(db.sql, site.id)).map((m) => m.payload)).toEqual([
      {
        gateways: [],
        dataloggers: [],
        sensors: [],
        removed: { gateways: [], dataloggers: [], sensors: [] },
        topics: [Number(connection.id)],
        parsing_log: [Number(connection.id)],
      },
    ]);
  });

  it('splits a large change over messages of at most 200 rows that together carry every row', async () => {
    const site = await newSite(db.sql);
    const tree = await newDeviceTree(db.sql, site.id);
    await db.sql`insert into sensor (site_id, datalogger_id, ident) select ${site.id}, ${tree.dataloggerId}, 's-' || i from generate_series(1, 449) as i`;
    await flush(db.sql, 0);
    const messages = await messagesOf(db.sql, site.id);
    expect(messages).toHaveLength(3);
    const size = (c: SiteChanges) => c.gateways.length + c.dataloggers.length + c.sensors.length;
    for (const m of messages) expect(size(m.payload)).toBeLessThanOrEqual(200);
    expect(messages.reduce((n, m) => n + size(m.payload), 0)).toBe(452);
    expect(new Set(messages.flatMap((m) => m.payload.sensors.map((s) => s.id))).size).toBe(450);
  });

  it('never sends a change twice with two flushers running, nor loses the last one, while a writer keeps writing', async () => {
    const sites = [await newSite(db.sql), await newSite(db.sql)];
    const sensorIds: string[] = [];
    for (const site of sites) {
      const tree = await newDeviceTree(db.sql, site.id);
      const more = await db.sql<{ id: string }[]>`
        insert into sensor (site_id, datalogger_id, ident) select ${site.id}, ${tree.dataloggerId}, 'x-' || i from generate_series(1, 19) as i
        returning id`;
      sensorIds.push(tree.sensorId, ...more.map((r) => r.id));
    }
    const siteIds = sites.map((s) => s.id);
    const flushers = [
      postgres(db.url, { max: 1, onnotice: () => undefined }),
      postgres(db.url, { max: 1, onnotice: () => undefined }),
    ];
    try {
      let writing = true;
      const flushing = flushers.map(async (sql) => {
        while (writing) await flush(sql, 0);
      });
      // One statement per step across both sites, as an ingestor batch writes; every step a new value.
      const STEPS = 150;
      for (let step = 1; step <= STEPS; step++) {
        await db.sql`update sensor set last_value = ${step}, last_value_at = now() where site_id in ${db.sql(siteIds)}`;
      }
      writing = false;
      await Promise.all(flushing);
      await flush(db.sql, 0);

      const seen = new Map<string, number>();
      for (const site of sites) {
        const messages = await messagesOf(db.sql, site.id);
        for (const m of messages) {
          for (const s of m.payload.sensors) {
            const key = `${s.id}=${s.last_value}`;
            seen.set(key, (seen.get(key) ?? 0) + 1);
          }
        }
        // (Which message is last cannot be told from realtime.messages: inserted_at is each
        // flusher's transaction start, not its commit. Clients get them in commit order.)
      }
      expect(
        [...seen].filter(([, n]) => n > 1),
        'states sent more than once',
      ).toEqual([]);
      expect(await db.sql`select * from private.site_change_outbox where site_id in ${db.sql(siteIds)}`).toEqual([]);
      // Every sensor's final value was sent.
      for (const id of sensorIds) expect(seen.has(`${Number(id)}=${STEPS}`), `sensor ${id}`).toBe(true);
    } finally {
      await Promise.all(flushers.map((sql) => sql.end()));
    }
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
