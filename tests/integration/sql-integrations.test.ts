import { randomBytes } from 'node:crypto';
import postgres, { type Sql, type TransactionSql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getFreePort, migrate } from '@bfg/local';
import { anonClaims, asClaims, newUser, serviceClaims, userClaims, type Claims } from '../support/claims.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { addMember, newConnection, newDeviceTree, newSite } from '../support/factories.ts';
import { startSystemPostgres, systemPostgresBinDir } from '../support/system-postgres.ts';
import { makeTempDir } from '../support/temp-dir.ts';

/**
 * SQL integrations (issue 11): the stable views and the bfg_reader role. Readers are real login
 * roles connecting with their own password, as Grafana would; JWT users are probed the way
 * PostgREST runs their requests.
 */

const VIEWS = ['reading_named', 'sensor_latest', 'connection_health'] as const;

// The rule sensor_latest's *_state columns document (its column comments): computed from the
// times in the row. It was the dashboard's rule when the view was made; the dashboard now shows
// the `presence` the staleness job writes (web/src/lib/presence.ts), and the view keeps its
// stable columns as they were.
type ViewState = 'online' | 'stale' | 'offline';
const ageS = (at: Date | null, now: number) => (at ? (now - at.getTime()) / 1000 : Number.POSITIVE_INFINITY);
const staleAfterS = (intervalS: number | null) => 3 * (intervalS ?? 60);
const gatewayState = (g: { online: boolean | null; last_seen_at: Date }, now: number): ViewState =>
  g.online === false ? 'offline' : ageS(g.last_seen_at, now) > 300 ? 'stale' : 'online';
const dataloggerState = (d: { last_seen_at: Date; interval_s: number | null }, now: number): ViewState =>
  ageS(d.last_seen_at, now) > staleAfterS(d.interval_s) ? 'stale' : 'online';
const sensorState = (s: { last_value_at: Date | null }, intervalS: number | null, now: number): ViewState =>
  ageS(s.last_value_at, now) > staleAfterS(intervalS) ? 'stale' : 'online';
const PERMISSION_DENIED = '42501';

interface Reader {
  name: string;
  sql: Sql;
}

let db: TestDatabase;
let siteA: { id: string; slug: string };
let siteB: { id: string; slug: string };
let connA: { id: string };
let connB: { id: string };
let memberA: Claims;
let memberB: Claims;
let memberBId: string;
let admin: Claims;
let nonMember: Claims;
let readerA: Reader;
let readerB: Reader;
let unbound: Reader;
const roles: string[] = [];
const connections: Sql[] = [];

/** A login role in bfg_reader, as an operator makes one, and a connection as it. */
async function newReader(): Promise<Reader> {
  const name = `bfg_test_reader_${randomBytes(5).toString('hex')}`;
  const password = randomBytes(12).toString('hex');
  await db.sql.unsafe(`create role ${name} login password '${password}' in role bfg_reader`);
  roles.push(name);
  const url = new URL(db.url);
  url.username = name;
  url.password = password;
  const sql = postgres(url.toString(), { max: 1, onnotice: () => undefined });
  connections.push(sql);
  return { name, sql };
}

/** Runs `fn` in a transaction that is rolled back; returns its result or the SQLSTATE it failed with. */
async function probe<T>(sql: Sql, fn: (tx: TransactionSql) => Promise<T>): Promise<T | string> {
  const rollback = Symbol('rollback');
  let result: T | string | undefined;
  try {
    await sql.begin(async (tx) => {
      try {
        result = await fn(tx);
      } catch (err) {
        result = (err as { code?: string }).code ?? String(err);
      }
      throw rollback;
    });
  } catch (err) {
    if (err !== rollback) throw err;
  }
  return result as T | string;
}

/** The site slugs each view shows, sorted (duplicates removed). */
async function slugsPerView(tx: TransactionSql): Promise<Record<string, string[]>> {
  const seen: Record<string, string[]> = {};
  for (const view of VIEWS) {
    const rows = await tx<{ slug: string }[]>`select distinct site_slug as slug from ${tx(view)} order by 1`;
    seen[view] = rows.map((r) => r.slug);
  }
  return seen;
}

const only = (...slugs: string[]) => Object.fromEntries(VIEWS.map((v) => [v, slugs]));

beforeAll(async () => {
  db = await createTestDatabase();
  const { sql } = db;
  siteA = await newSite(sql);
  siteB = await newSite(sql);
  connA = await newConnection(sql, siteA.id, { isActive: true });
  connB = await newConnection(sql, siteB.id);
  for (const [site, conn] of [
    [siteA, connA],
    [siteB, connB],
  ] as const) {
    await newDeviceTree(sql, site.id);
    await sql`select set_mqtt_connection_secret(${conn.id}, 'broker-password', null, 'PRIVATE KEY', null)`;
    await sql`update mqtt_connection set username = 'broker-user' where id = ${conn.id}`;
    await sql`insert into mqtt_connection_log (connection_id, level, event, status, detail) values
              (${conn.id}, 'error', 'error', 'error', 'refused'),
              (${conn.id}, 'warn', 'disconnect', 'reconnecting', 'lost'),
              (${conn.id}, 'info', 'connect', 'connected', 'ok')`;
    // An event older than the hour the counts cover.
    await sql`insert into mqtt_connection_log (connection_id, created_at, level, event) values
              (${conn.id}, now() - interval '2 hours', 'error', 'error')`;
    await sql`insert into mqtt_parsing_log (connection_id, topic, parser, kind, message, fingerprint) values
              (${conn.id}, 'x/y', 'bfg.datalogger-data.v1', 'schema', 'ts: required', 'f1')`;
  }
  const memberAId = await newUser(sql);
  memberBId = await newUser(sql);
  await addMember(sql, siteA.id, memberAId);
  await addMember(sql, siteB.id, memberBId);
  memberA = userClaims(memberAId);
  memberB = userClaims(memberBId);
  admin = userClaims(await newUser(sql), { admin: true });
  nonMember = userClaims(await newUser(sql));

  readerA = await newReader();
  readerB = await newReader();
  unbound = await newReader();
  await sql`select bind_sql_reader(${readerA.name}, ${[siteA.slug]})`;
  await sql`select bind_sql_reader(${readerB.name}, ${[siteB.slug]})`;
});

afterAll(async () => {
  await Promise.all(connections.map((c) => c.end({ timeout: 5 })));
  for (const role of roles) await db.sql.unsafe(`drop role if exists ${role}`);
  await db.drop();
});

describe('what each role sees through the views', () => {
  it('a reader sees the rows of its bound site in every view, and none of another site', async () => {
    expect(await probe(readerA.sql, slugsPerView)).toEqual(only(siteA.slug));
    expect(await probe(readerB.sql, slugsPerView)).toEqual(only(siteB.slug));
    const rows = await probe(readerA.sql, async (tx) => ({
      readings: await tx`select ts, value, sensor_ident, sensor_kind, sensor_unit, sensor_path, datalogger_ident,
                                gateway_ident, site_name from reading_named`,
      latest: await tx`select sensor_path, last_value, sensor_state, gateway_state from sensor_latest`,
      health: await tx`select connection_id, is_active, status, errors_last_hour::int, warnings_last_hour::int,
                              disconnects_last_hour::int, events_last_hour::int, parsing_errors_last_hour::int
                       from connection_health`,
    }));
    expect(rows).toMatchObject({
      readings: [
        {
          value: 21.5,
          sensor_ident: 't_air',
          sensor_kind: 'temperature',
          sensor_unit: '°C',
          sensor_path: 'gw-1/dl-1/t_air',
          datalogger_ident: 'dl-1',
          gateway_ident: 'gw-1',
          site_name: siteA.slug,
        },
      ],
      // newDeviceTree writes a reading but not the sensor's latest value.
      latest: [{ sensor_path: 'gw-1/dl-1/t_air', last_value: null, sensor_state: 'stale', gateway_state: 'online' }],
      health: [
        {
          connection_id: connA.id,
          is_active: true,
          status: 'disconnected',
          errors_last_hour: 1,
          warnings_last_hour: 1,
          disconnects_last_hour: 1,
          events_last_hour: 3,
          parsing_errors_last_hour: 1,
        },
      ],
    });
  });

  it('a reader bound to no site, or only to an inactive one, sees nothing', async () => {
    expect(await probe(unbound.sql, slugsPerView)).toEqual(only());
    await db.sql`update site set is_active = false where id = ${siteA.id}`;
    try {
      expect(await probe(readerA.sql, slugsPerView)).toEqual(only());
    } finally {
      await db.sql`update site set is_active = true where id = ${siteA.id}`;
    }
  });

  it('read directly, the tables under the views show a reader the same rows as the views (its sites only)', async () => {
    const tables: [table: string, ofSiteA: string][] = [
      ['site', `id = ${siteA.id}`],
      ['gateway', `site_id = ${siteA.id}`],
      ['datalogger', `site_id = ${siteA.id}`],
      ['sensor', `site_id = ${siteA.id}`],
      ['sensor_reading', `sensor_id in (select id from sensor where site_id = ${siteA.id})`],
      ['mqtt_connection', `site_id = ${siteA.id}`],
      ['mqtt_connection_log', `connection_id = ${connA.id}`],
      ['mqtt_parsing_log', `connection_id = ${connA.id}`],
    ];
    for (const [table, ofSiteA] of tables) {
      // count(*) needs no column privilege; the policies alone decide the rows.
      const [expected] = await db.sql.unsafe<{ n: number }[]>(
        `select count(*)::int as n from ${table} where ${ofSiteA}`,
      );
      expect(expected!.n, table).toBeGreaterThan(0);
      const seen = await probe(readerA.sql, (tx) =>
        tx.unsafe<{ n: number }[]>(`select count(*)::int as n from ${table}`),
      );
      expect(seen, table).toEqual([{ n: expected!.n }]);
      expect(await probe(unbound.sql, (tx) => tx.unsafe(`select count(*)::int as n from ${table}`)), table).toEqual([
        { n: 0 },
      ]);
    }
  });

  it('rebinding replaces the sites; an empty list unbinds', async () => {
    const bind = (slugs: string[]) =>
      db.sql<{ slug: string }[]>`select bind_sql_reader(${unbound.name}, ${slugs}) as slug`;
    try {
      expect((await bind([siteB.slug, siteA.slug])).map((r) => r.slug)).toEqual([siteA.slug, siteB.slug].sort());
      expect(await probe(unbound.sql, slugsPerView)).toEqual(only(...[siteA.slug, siteB.slug].sort()));
      expect((await bind([siteB.slug])).map((r) => r.slug)).toEqual([siteB.slug]);
      expect(await probe(unbound.sql, slugsPerView)).toEqual(only(siteB.slug));
    } finally {
      expect(await bind([])).toEqual([]);
    }
    expect(await probe(unbound.sql, slugsPerView)).toEqual(only());
  });

  it('authenticated users see their sites through the views (as PostgREST runs them), admins all, anon nothing', async () => {
    expect(await asClaims(db.sql, memberA, slugsPerView)).toEqual(only(siteA.slug));
    expect(await asClaims(db.sql, memberB, slugsPerView)).toEqual(only(siteB.slug));
    expect(await asClaims(db.sql, admin, slugsPerView)).toEqual(only(...[siteA.slug, siteB.slug].sort()));
    expect(await asClaims(db.sql, nonMember, slugsPerView)).toEqual(only());
    expect(await asClaims(db.sql, serviceClaims, slugsPerView)).toEqual(only(...[siteA.slug, siteB.slug].sort()));
    for (const view of VIEWS) {
      expect(
        await probe(db.sql, async (tx) => {
          await tx`select set_config('role', 'anon', true), set_config('request.jwt.claims', ${JSON.stringify(anonClaims)}, true)`;
          return tx`select * from ${tx(view)}`;
        }),
        `anon on ${view}`,
      ).toBe(PERMISSION_DENIED);
    }
  });
});

describe('a reader cannot widen what it sees', () => {
  // The claims of an admin, with the subject of site B's member.
  const forgedAdmin = () => JSON.stringify(userClaims(memberBId, { admin: true }));

  it('forged JWT claims change nothing: admin claims, another member, the service role', async () => {
    const forgeries: [string, string][][] = [
      [['request.jwt.claims', forgedAdmin()]],
      [['request.jwt.claims', JSON.stringify(memberB)]],
      [['request.jwt.claims', JSON.stringify(serviceClaims)]],
      [
        ['request.jwt.claim.sub', memberBId],
        ['request.jwt.claim.role', 'service_role'],
        ['request.jwt.claim', forgedAdmin()],
      ],
    ];
    for (const settings of forgeries) {
      const seen = await probe(readerA.sql, async (tx) => {
        for (const [name, value] of settings) await tx`select set_config(${name}, ${value}, true)`;
        return slugsPerView(tx);
      });
      expect(seen, JSON.stringify(settings)).toEqual(only(siteA.slug));
    }
    // Set for the whole session rather than the transaction, too.
    await readerA.sql.reserve().then(async (session) => {
      try {
        await session`select set_config('request.jwt.claims', ${forgedAdmin()}, false)`;
        const seen = await session<{ n: number }[]>`select count(distinct site_slug)::int as n from sensor_latest`;
        expect(seen[0]!.n).toBe(1);
      } finally {
        await session`reset all`;
        session.release();
      }
    });
  });

  it('cannot become an API role, another reader, or another session user', async () => {
    for (const role of ['authenticated', 'service_role', 'anon', 'postgres', readerB.name]) {
      expect(await probe(readerA.sql, (tx) => tx.unsafe(`set local role ${role}`)), `set role ${role}`).toBe(
        PERMISSION_DENIED,
      );
      expect(
        await probe(readerA.sql, (tx) => tx`select set_config('role', ${role}, true)`),
        `set_config role ${role}`,
      ).toBe(PERMISSION_DENIED);
    }
    expect(await probe(readerA.sql, (tx) => tx.unsafe(`set session authorization ${readerB.name}`))).toBe(
      PERMISSION_DENIED,
    );
    // The group role itself is never bound: switching to it shows nothing.
    expect(
      await probe(readerA.sql, async (tx) => {
        await tx`set local role bfg_reader`;
        return slugsPerView(tx);
      }),
    ).toEqual(only());
  });

  it('cannot bind itself, read the bindings or call the policy helpers', async () => {
    for (const sql of [readerA.sql, unbound.sql]) {
      expect(await probe(sql, (tx) => tx`select bind_sql_reader(${unbound.name}, ${[siteB.slug]})`)).toBe(
        PERMISSION_DENIED,
      );
      expect(
        await probe(
          sql,
          (tx) => tx`insert into sql_reader_site (role_name, site_id) values (current_user, ${siteB.id})`,
        ),
      ).toBe(PERMISSION_DENIED);
      expect(await probe(sql, (tx) => tx`select * from sql_reader_site`)).toBe(PERMISSION_DENIED);
      expect(await probe(sql, (tx) => tx`select private.sql_reader_site_ids()`)).toBe(PERMISSION_DENIED);
    }
  });

  it('writes nothing: not through the views, not to the tables under them, not to new tables', async () => {
    const writes = [
      `insert into sensor_latest (sensor_id) values (1)`,
      `update reading_named set value = 0`,
      `delete from connection_health`,
      `insert into sensor_reading (sensor_id, ts, value) values (1, now(), 1)`,
      `update sensor set last_value = 0`,
      `delete from sensor_reading`,
      `truncate sensor_reading`,
      `update mqtt_connection set is_active = false`,
      `update site set name = 'x'`,
      `delete from mqtt_connection_log`,
      `insert into site (slug, name) values ('x', 'x')`,
      `create table public.reader_table (id int)`,
      `create view public.reader_view as select 1`,
    ];
    for (const write of writes) {
      const outcome = await probe(readerA.sql, (tx) => tx.unsafe(write));
      // 55000: the views are not updatable at all.
      expect(['42501', '55000'], write).toContain(outcome);
    }
    const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from sensor_reading`;
    expect(row!.n).toBe(2);
  });

  it('reads no secret and no column the views do not show', async () => {
    const reads = [
      'select * from mqtt_connection_secret',
      'select password from mqtt_connection_secret',
      'select * from mqtt_connection',
      'select host, username from mqtt_connection',
      'select subscribe_filters from mqtt_connection',
      `select * from mqtt_connection_secret_presence(${connA.id})`,
      `select set_mqtt_connection_secret(${connA.id}, 'x')`,
      'select * from auth.users',
      'select * from mqtt_message_archive',
      'select * from discovered_topic',
      'select payload from realtime.messages',
      'select * from site_member',
      'select * from mqtt_parsing_log',
    ];
    for (const read of reads) {
      expect(await probe(readerA.sql, (tx) => tx.unsafe(read)), read).toBe(PERMISSION_DENIED);
    }
    // What it may read of a base table directly is what the views show, under the same policies.
    const direct = await probe(readerA.sql, (tx) => tx<{ slug: string }[]>`select slug from site`);
    expect(direct).toEqual([{ slug: siteA.slug }]);
  });

  it("holds exactly SELECT on the views, the columns under them and nothing else (the catalogue's word)", async () => {
    const [role] = await db.sql<{ login: boolean; super: boolean; bypass: boolean; api: string[] }[]>`
      select r.rolcanlogin as login, r.rolsuper as super, r.rolbypassrls as bypass,
             array(select a.rolname::text from pg_roles a
                   where a.rolname in ('anon', 'authenticated', 'service_role') and pg_has_role(r.oid, a.oid, 'USAGE')) as api
      from pg_roles r where r.rolname = 'bfg_reader'`;
    expect(role).toEqual({ login: false, super: false, bypass: false, api: [] });

    const tables = await db.sql<{ grant: string }[]>`
      select n.nspname || '.' || c.relname || ' ' || p.priv as grant
      from pg_class c
      join pg_namespace n on n.oid = c.relnamespace
      cross join unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) as p (priv)
      where c.relkind in ('r', 'p', 'v', 'm', 'f')
        and n.nspname not in ('pg_catalog', 'information_schema')
        and has_table_privilege(${readerA.name}, c.oid, p.priv)
      order by 1`;
    expect(tables.map((t) => t.grant)).toEqual([
      'public.connection_health SELECT',
      'public.reading_named SELECT',
      'public.sensor_latest SELECT',
    ]);

    const columns = await db.sql<{ grant: string }[]>`
      select c.relname || ' ' || p.priv || ' ' || string_agg(a.attname, ',' order by a.attname) as grant
      from pg_class c
      join pg_namespace n on n.oid = c.relnamespace
      join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
      cross join unnest(array['SELECT', 'INSERT', 'UPDATE', 'REFERENCES']) as p (priv)
      where c.relkind in ('r', 'p', 'f')
        and n.nspname not in ('pg_catalog', 'information_schema')
        and has_column_privilege(${readerA.name}, c.oid, a.attnum, p.priv)
      group by n.nspname, c.relname, p.priv
      order by 1`;
    expect(columns.map((c) => c.grant)).toEqual([
      'datalogger SELECT gateway_id,id,ident,interval_s,last_seen_at,model,name,presence,serial',
      'gateway SELECT id,ident,last_seen_at,name,online,presence',
      'mqtt_connection SELECT id,is_active,last_connected_at,last_message_at,lease_expires_at,owner_instance,site_id,status,status_changed_at,status_detail',
      'mqtt_connection_log SELECT connection_id,created_at,event,level',
      'mqtt_parsing_log SELECT connection_id,last_seen_at',
      'sensor SELECT datalogger_id,id,ident,kind,last_quality,last_value,last_value_at,name,presence,site_id,unit',
      'sensor_reading SELECT quality,sensor_id,ts,value',
      'site SELECT id,name,slug',
    ]);

    // No function it can reach by name: the only non-system schema it may use is public.
    const schemas = await db.sql<{ name: string }[]>`
      select nspname as name from pg_namespace
      where has_schema_privilege(${readerA.name}, oid, 'USAGE') and nspname not in ('pg_catalog', 'information_schema')`;
    expect(schemas.map((s) => s.name)).toEqual(['public']);
    const functions = await db.sql<{ name: string }[]>`
      select p.oid::regprocedure::text as name from pg_proc p
      where p.pronamespace = 'public'::regnamespace and has_function_privilege(${readerA.name}, p.oid, 'EXECUTE')`;
    expect(functions).toEqual([]);
  });
});

describe('binding readers is for admins and the service role', () => {
  const bindingsOf = async (role: string) =>
    (
      await db.sql<{ slug: string }[]>`
        select s.slug from sql_reader_site b join site s on s.id = b.site_id where b.role_name = ${role} order by 1`
    ).map((r) => r.slug);

  it('anon and non-admin users can neither bind nor read the bindings', async () => {
    for (const claims of [anonClaims, memberA, memberB, nonMember]) {
      const label = `${claims.role} ${claims.sub ?? ''}`;
      for (const slug of [siteA.slug, siteB.slug]) {
        const outcome = await asClaims(db.sql, claims, (tx) =>
          tx`select bind_sql_reader(${unbound.name}, ${[slug]})`.catch((err: { code: string }) => err.code),
        );
        expect(['42501', '22023'], label).toContain(outcome);
        const insert = await asClaims(db.sql, claims, (tx) =>
          tx`insert into sql_reader_site (role_name, site_id) values (${unbound.name}, ${siteA.id})`.catch(
            (err: { code: string }) => err.code,
          ),
        );
        expect(insert, label).toBe(PERMISSION_DENIED);
      }
      const read = await asClaims(db.sql, claims, (tx) =>
        tx`select count(*)::int as n from sql_reader_site`.then(
          (rows) => rows[0]!['n'] as number,
          (err: { code: string }) => err.code,
        ),
      );
      expect([0, PERMISSION_DENIED], label).toContain(read);
    }
    expect(await bindingsOf(unbound.name)).toEqual([]);
  });

  it('admins and the service role bind; the function refuses what is not a reader or not a site', async () => {
    for (const claims of [admin, serviceClaims]) {
      const bound = await asClaims(
        db.sql,
        claims,
        (tx) => tx<{ slug: string }[]>`select bind_sql_reader(${unbound.name}, ${[siteB.slug]}) as slug`,
        { commit: true },
      );
      expect(bound.map((r) => r.slug)).toEqual([siteB.slug]);
      expect(await bindingsOf(unbound.name)).toEqual([siteB.slug]);
      await db.sql`select bind_sql_reader(${unbound.name}, '{}')`;
    }
    const failures: [string, string[], string][] = [
      ['bfg_reader', [siteA.slug], '22023'],
      ['no_such_role_anywhere', [siteA.slug], '42704'],
      ['authenticated', [siteA.slug], '22023'],
      [unbound.name, ['no-such-site'], '22023'],
    ];
    for (const [role, slugs, code] of failures) {
      await expect(db.sql`select bind_sql_reader(${role}, ${slugs})`, role).rejects.toMatchObject({ code });
    }
    await expect(
      db.sql`insert into sql_reader_site (role_name, site_id) values ('bfg_reader', ${siteA.id})`,
    ).rejects.toMatchObject({ code: '23514' });
    expect(await bindingsOf(unbound.name)).toEqual([]);
  });
});

describe('the views as a contract', () => {
  it('comments every view and column as stable', async () => {
    for (const view of VIEWS) {
      const [row] = await db.sql<{ comment: string | null; options: string[] | null }[]>`
        select obj_description(${`public.${view}`}::regclass, 'pg_class') as comment, c.reloptions as options
        from pg_class c where c.oid = ${`public.${view}`}::regclass`;
      expect(row!.comment, view).toContain('stable: columns are only added, never renamed or removed');
      expect(row!.options, view).toContain('security_invoker=true');
      const columns = await db.sql<{ name: string; comment: string | null }[]>`
        select a.attname as name, col_description(a.attrelid, a.attnum) as comment
        from pg_attribute a where a.attrelid = ${`public.${view}`}::regclass and a.attnum > 0 order by a.attnum`;
      expect(columns.length).toBeGreaterThan(5);
      for (const column of columns) expect(column.comment, `${view}.${column.name}`).toMatch(/\(stable\)\.$/);
    }
  });

  it('sensor_latest says online, stale and offline by the rule its columns document', async () => {
    const site = await newSite(db.sql);
    await db.sql`
      insert into gateway (site_id, ident, online, last_seen_at) values
        (${site.id}, 'gw-on', true, now() - interval '10 seconds'),
        (${site.id}, 'gw-quiet', null, now() - interval '20 minutes'),
        (${site.id}, 'gw-off', false, now())`;
    const gateways = await db.sql<{ id: string }[]>`select id from gateway where site_id = ${site.id} order by id`;
    for (const [i, g] of gateways.entries()) {
      const [fast] = await db.sql<{ id: string }[]>`
        insert into datalogger (site_id, gateway_id, ident, interval_s, last_seen_at)
        values (${site.id}, ${g.id}, 'dl-fast', 10, now() - make_interval(secs => ${i * 20})) returning id`;
      const [plain] = await db.sql<{ id: string }[]>`
        insert into datalogger (site_id, gateway_id, ident, interval_s, last_seen_at)
        values (${site.id}, ${g.id}, 'dl-plain', null, now() - make_interval(secs => ${i * 100})) returning id`;
      for (const dl of [fast!, plain!]) {
        await db.sql`
          insert into sensor (site_id, datalogger_id, ident, last_value, last_value_at) values
            (${site.id}, ${dl.id}, 'recent', 1, now() - interval '5 seconds'),
            (${site.id}, ${dl.id}, 'older', 2, now() - interval '100 seconds'),
            (${site.id}, ${dl.id}, 'never', null, null)`;
      }
    }
    const rows = await db.sql.begin(
      (tx) =>
        tx<
          {
            now: Date;
            sensor_state: string;
            datalogger_state: string;
            gateway_state: string;
            last_value_at: Date | null;
            datalogger_interval_s: number | null;
            datalogger_last_seen_at: Date;
            gateway_online: boolean | null;
            gateway_last_seen_at: Date;
          }[]
        >`select now() as now, * from sensor_latest where site_id = ${site.id}`,
    );
    expect(rows).toHaveLength(18);
    const states = new Set<string>();
    for (const r of rows) {
      const now = r.now.getTime();
      expect(r.sensor_state).toBe(sensorState({ last_value_at: r.last_value_at }, r.datalogger_interval_s, now));
      expect(r.datalogger_state).toBe(
        dataloggerState({ last_seen_at: r.datalogger_last_seen_at, interval_s: r.datalogger_interval_s }, now),
      );
      expect(r.gateway_state).toBe(
        gatewayState({ online: r.gateway_online, last_seen_at: r.gateway_last_seen_at }, now),
      );
      states.add(`sensor ${r.sensor_state}`).add(`datalogger ${r.datalogger_state}`).add(`gateway ${r.gateway_state}`);
    }
    // Every state occurs, so the comparison covers each branch.
    expect([...states].sort()).toEqual([
      'datalogger online',
      'datalogger stale',
      'gateway offline',
      'gateway online',
      'gateway stale',
      'sensor online',
      'sensor stale',
    ]);
  });

  it('uses indexes: sensor_latest never reads readings, reading_named reads one partition by its key, connection_health the log by its index', async () => {
    const [sensor] = await db.sql<{ id: string }[]>`select id from sensor where site_id = ${siteA.id}`;
    await db.sql`select private.create_sensor_reading_partition('2031-03-01')`;
    await db.sql`
      insert into sensor_reading (sensor_id, ts, value)
      select ${sensor!.id}, timestamptz '2031-03-01 00:00:00+00' + make_interval(mins => g), g
      from generate_series(0, 29999) g`;
    await db.sql`
      insert into mqtt_connection_log (connection_id, created_at, level, event)
      select ${connA.id}, now() - make_interval(mins => g), 'info', 'status' from generate_series(61, 20060) g`;
    await db.sql`analyze sensor_reading, sensor_reading_2031_03, mqtt_connection_log, sensor, datalogger, gateway, site`;
    const plan = (query: string) =>
      probe(readerA.sql, async (tx) =>
        (await tx.unsafe<{ 'QUERY PLAN': string }[]>(`explain ${query}`)).map((r) => r['QUERY PLAN']).join('\n'),
      );

    const latest = await plan(`select * from sensor_latest where site_slug = '${siteA.slug}'`);
    expect(latest).not.toMatch(/sensor_reading/);

    const readings = await plan(
      `select ts, value from reading_named where sensor_id = ${sensor!.id}
       and ts >= '2031-03-10T00:00:00Z' and ts < '2031-03-10T06:00:00Z'`,
    );
    expect(readings).toMatch(/(Index|Index Only|Bitmap Index) Scan (using|on) sensor_reading_2031_03_pkey/);
    expect(readings).not.toMatch(/Seq Scan on sensor_reading/);
    expect(readings).not.toMatch(/sensor_reading_default|sensor_reading_2031_04/);

    const health = await plan(`select * from connection_health`);
    // (connection_id, created_at desc) or (created_at): either bounds the scan to the last hour.
    expect(health).toMatch(/(Index|Bitmap Index) Scan (using|on) mqtt_connection_log_(recent|created_at)_idx/);
    expect(health).not.toMatch(/Seq Scan on mqtt_connection_log/);

    // The counts still cover only the last hour.
    const counts = await probe(
      readerA.sql,
      (tx) => tx<{ n: number }[]>`select events_last_hour::int as n from connection_health`,
    );
    expect(counts).toEqual([{ n: 3 }]);
  });
});

// Supabase runs Postgres 15, whose role membership rules (SET ROLE, inheritance) predate 16's: the
// reader's isolation is proved there too (skipped, as in migrations.test.ts, without postgresql-15).
const pg15 = systemPostgresBinDir(15);
describe.skipIf(!pg15)('on Postgres 15', () => {
  it('a reader sees only its bound site, whatever claims or role it tries; a member through the views likewise', async () => {
    const dir = await makeTempDir('sql-integrations-pg15');
    const password = randomBytes(12).toString('hex');
    const server = await startSystemPostgres({ binDir: pg15!, baseDir: dir.path, port: await getFreePort(), password });
    const sql = postgres(server.url('postgres'), { max: 1, onnotice: () => undefined });
    let reader: Sql | undefined;
    try {
      const [version] = await sql<
        { major: number }[]
      >`select current_setting('server_version_num')::int / 10000 as major`;
      expect(version!.major).toBe(15);
      await migrate(sql);
      const a = await newSite(sql);
      const b = await newSite(sql);
      for (const site of [a, b]) {
        const conn = await newConnection(sql, site.id);
        await newDeviceTree(sql, site.id);
        await sql`insert into mqtt_connection_log (connection_id, level, event) values (${conn.id}, 'error', 'error')`;
        await sql`select set_mqtt_connection_secret(${conn.id}, 'broker-password')`;
      }
      const memberId = await newUser(sql);
      await addMember(sql, a.id, memberId);
      const readerPassword = randomBytes(12).toString('hex');
      await sql.unsafe(`create role pg15_reader login password '${readerPassword}' in role bfg_reader`);
      await sql`select bind_sql_reader('pg15_reader', ${[a.slug]})`;
      const url = new URL(server.url('postgres'));
      url.username = 'pg15_reader';
      url.password = readerPassword;
      reader = postgres(url.toString(), { max: 1, onnotice: () => undefined });

      expect(await probe(reader, slugsPerView)).toEqual(only(a.slug));
      const forged = await probe(reader, async (tx) => {
        await tx`select set_config('request.jwt.claims', ${JSON.stringify(userClaims(memberId, { admin: true }))}, true)`;
        return slugsPerView(tx);
      });
      expect(forged).toEqual(only(a.slug));
      for (const role of ['authenticated', 'service_role']) {
        expect(await probe(reader, (tx) => tx.unsafe(`set local role ${role}`)), role).toBe(PERMISSION_DENIED);
      }
      expect(
        await probe(reader, async (tx) => {
          await tx`set local role bfg_reader`;
          return slugsPerView(tx);
        }),
      ).toEqual(only());
      expect(await probe(reader, (tx) => tx`select password from mqtt_connection_secret`)).toBe(PERMISSION_DENIED);
      expect(await probe(reader, (tx) => tx`update sensor set last_value = 0`)).toBe(PERMISSION_DENIED);
      expect(await probe(reader, (tx) => tx`select bind_sql_reader('pg15_reader', ${[b.slug]})`)).toBe(
        PERMISSION_DENIED,
      );
      expect(await asClaims(sql, userClaims(memberId), slugsPerView)).toEqual(only(a.slug));
    } finally {
      await reader?.end({ timeout: 5 });
      await sql.end();
      await server.stop();
      await dir.remove();
    }
  });
});
