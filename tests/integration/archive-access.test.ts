import { randomBytes } from 'node:crypto';
import { runMigrations } from 'graphile-worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getFreePort, startWebServer, type WebServer } from '@bfg/local';
import { archivedMessageCount, listBackfillRuns } from '../../web/src/lib/server/queries/topics.ts';
import { listWorkerJobs } from '../../web/src/lib/server/queries/jobs.ts';
import { anonClaims, asClaims, newUser, userClaims, type Claims } from '../support/claims.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { addMember, newConnection, newSite } from '../support/factories.ts';
import { signJwt } from '../support/jwt.ts';

/**
 * What a pattern would replay (public.archived_message_count) and the background jobs
 * (public.worker_jobs) are for admins only; a pattern's replay progress (backfill_run) follows
 * the members' connections. Tried the ways a request can try: as anonymous, as a member of the
 * connection's site and of another, with user_metadata (which users may edit on Supabase) saying
 * admin, with regular-expression and quoting tricks in the pattern — in the database with the
 * dashboard's own query functions, and through the built dashboard's endpoint and form action
 * with tokens signed here (forged with the wrong key, expired, or honest). The endpoint part
 * runs the dashboard build (`npm test` builds it first).
 */

const PERMISSION_DENIED = '42501';
const jwtSecret = randomBytes(32).toString('hex');

let db: TestDatabase;
let web: WebServer;
let connA: string;
let connB: string;
let patternA: string;
let patternB: string;
const who = {} as Record<'admin' | 'memberA' | 'memberB' | 'selfMadeAdmin', Claims>;

/** The SQLSTATE a call fails with as `claims`, or its result. */
async function attempt<T>(claims: Claims, fn: Parameters<typeof asClaims<T>>[2]): Promise<T | string> {
  return asClaims(db.sql, claims, async (tx) => {
    try {
      return await fn(tx);
    } catch (err) {
      return (err as { code?: string }).code ?? String(err);
    }
  });
}

beforeAll(async () => {
  db = await createTestDatabase();
  const siteA = await newSite(db.sql);
  const siteB = await newSite(db.sql);
  connA = (await newConnection(db.sql, siteA.id)).id;
  connB = (await newConnection(db.sql, siteB.id)).id;
  const [adminId, memberAId, memberBId] = [await newUser(db.sql), await newUser(db.sql), await newUser(db.sql)];
  await addMember(db.sql, siteA.id, memberAId);
  await addMember(db.sql, siteB.id, memberBId);
  who.admin = userClaims(adminId, { admin: true });
  who.memberA = userClaims(memberAId);
  who.memberB = userClaims(memberBId);
  who.selfMadeAdmin = { ...userClaims(memberAId), user_metadata: { role: 'admin' } } as Claims;

  // Archived messages of both connections; on B, topics that would match A's patterns too.
  await db.sql`
    insert into mqtt_message_archive (connection_id, topic, payload)
    select c, t, convert_to('{}', 'UTF8')
    from (values (${connA}::bigint, 'a/gw-1/data'), (${connA}::bigint, 'a/gw-2/data'), (${connA}::bigint, 'a/gw-2/status'),
                 (${connB}::bigint, 'a/gw-1/data'), (${connB}::bigint, 'a/gw-9/data')) v(c, t)`;
  // Active patterns: the trigger asks for their replays (backfill_run rows, state queued).
  const pattern = async (conn: string) =>
    (
      await db.sql<{ id: string }[]>`
        insert into mqtt_topic (connection_id, pattern, parser) values (${conn}, 'a/+gw/data', 'bfg.datalogger-data.v1')
        returning id`
    )[0]!.id;
  patternA = await pattern(connA);
  patternB = await pattern(connB);

  web = await startWebServer({
    port: await getFreePort(),
    host: '127.0.0.1',
    databaseUrl: db.url,
    jwtSecret,
    // Only the browser's supabase-js would talk to it; these requests never reach it.
    realtimeUrl: 'http://127.0.0.1:9',
    log: () => undefined,
    env: { SENTRY_DSN: '', BFG_LOG_LEVEL: 'warn' },
  });
});

afterAll(async () => {
  await web?.stop();
  await db?.drop();
});

describe('archived_message_count in the database', () => {
  it('counts the archived messages of the connection a pattern matches, for admins', async () => {
    const count = (pattern: string, conn = connA) =>
      attempt(who.admin, (tx) => archivedMessageCount(tx, Number(conn), pattern));
    expect(await count('a/+gw/data')).toBe(2);
    expect(await count('a/#')).toBe(3);
    expect(await count('a/+gw/data', connB)).toBe(2);
    // The pattern is an MQTT filter, never a regular expression or SQL.
    expect(await count('a/.*')).toBe(0);
    expect(await count('a/gw-[12]/data')).toBe(0);
    expect(await count("a/'); delete from mqtt_message_archive; --")).toBe(0);
    expect(await count('a/+gw/data\\')).toBe(0);
    const [left] = await db.sql<{ n: number }[]>`select count(*)::int as n from mqtt_message_archive`;
    expect(left!.n).toBe(5);
  });

  it('refuses anonymous, members of the site and of others, and a user_metadata admin', async () => {
    for (const claims of [anonClaims, who.memberA, who.memberB, who.selfMadeAdmin]) {
      expect(await attempt(claims, (tx) => archivedMessageCount(tx, Number(connA), 'a/#'))).toBe(PERMISSION_DENIED);
    }
    // Nor can a member read the archive directly.
    expect(await attempt(who.memberA, (tx) => tx`select count(*)::int as n from mqtt_message_archive`)).toEqual([
      { n: 0 },
    ]);
  });
});

describe('backfill_run and worker_jobs in the database', () => {
  it("shows members their connections' replays only, and lets nobody but the service write them", async () => {
    const topics = async (claims: Claims) => {
      const runs = await attempt(claims, (tx) => listBackfillRuns(tx));
      return typeof runs === 'string' ? runs : runs.map((r) => [String(r.topic_id), r.state]);
    };
    expect(await topics(who.admin)).toEqual([
      [patternA, 'queued'],
      [patternB, 'queued'],
    ]);
    expect(await topics(who.memberA)).toEqual([[patternA, 'queued']]);
    expect(await topics(who.memberB)).toEqual([[patternB, 'queued']]);
    expect(await topics(anonClaims)).toBe(PERMISSION_DENIED);
    for (const claims of [who.memberA, who.admin]) {
      expect(
        await attempt(claims, (tx) => tx`update backfill_run set state = 'done' where topic_id = ${patternA}`),
      ).toBe(PERMISSION_DENIED);
    }
  });

  it('lists jobs to admins only', async () => {
    // graphile-worker's schema, as a worker installs it when it starts, and one job waiting.
    await runMigrations({ connectionString: db.url });
    await db.sql`select graphile_worker.add_job('archive_access_probe', '{}'::json, run_at := now() + interval '1 hour')`;
    const tasks = async (claims: Claims) => {
      const jobs = await attempt(claims, (tx) => listWorkerJobs(tx));
      return typeof jobs === 'string' ? jobs : jobs.map((j) => j.task_identifier);
    };
    expect(await tasks(who.admin)).toContain('archive_access_probe');
    for (const claims of [who.memberA, who.memberB, who.selfMadeAdmin]) expect(await tasks(claims)).toEqual([]);
    expect(await tasks(anonClaims)).toBe(PERMISSION_DENIED);
  });
});

describe("the dashboard's endpoint and forms", () => {
  const token = (claims: Claims, options: { secret?: string; expiresIn?: number } = {}) =>
    signJwt(options.secret ?? jwtSecret, claims as unknown as Record<string, unknown>, options.expiresIn ?? 3600);
  const ask = async (accessToken: string | null, query: Record<string, string>) => {
    const response = await fetch(`${web.url}/api/archived-count?${new URLSearchParams(query)}`, {
      headers: { accept: 'application/json', ...(accessToken ? { cookie: `bfg-access-token=${accessToken}` } : {}) },
      redirect: 'manual',
    });
    return { status: response.status, body: (await response.json().catch(() => null)) as unknown };
  };
  const query = () => ({ connection_id: connA, pattern: 'a/+gw/data' });

  it('answers an admin with the count, and refuses every other request', async () => {
    expect(await ask(await token(who.admin), query())).toEqual({ status: 200, body: { count: 2 } });

    expect((await ask(null, query())).status).toBe(401);
    // Signed with another key, or expired: not signed in at all.
    expect((await ask(await token(who.admin, { secret: randomBytes(32).toString('hex') }), query())).status).toBe(401);
    expect((await ask(await token(who.admin, { expiresIn: -60 }), query())).status).toBe(401);
    expect((await ask('not.a.token', query())).status).toBe(401);
    for (const claims of [who.memberA, who.memberB, who.selfMadeAdmin]) {
      const refused = await ask(await token(claims), query());
      expect(refused.status).toBe(403);
      expect(JSON.stringify(refused.body)).not.toContain('count');
    }
  });

  it('validates what it is asked', async () => {
    const admin = await token(who.admin);
    const bads: Record<string, string>[] = [
      { pattern: 'a/#' },
      { connection_id: connA },
      { connection_id: 'abc', pattern: 'a/#' },
      { connection_id: `${connA} or 1=1`, pattern: 'a/#' },
      { connection_id: '0', pattern: 'a/#' },
      { connection_id: '99999999999999999999', pattern: 'a/#' },
      { connection_id: connA, pattern: '' },
      { connection_id: connA, pattern: 'a/#/data' },
      { connection_id: connA, pattern: 'a/gw+/data' },
      { connection_id: connA, pattern: 'a/'.repeat(600) },
    ];
    for (const bad of bads) {
      expect((await ask(admin, bad)).status, JSON.stringify(bad)).toBe(400);
    }
    expect(await ask(admin, { connection_id: connA, pattern: "a/'); select pg_sleep(10); --" })).toEqual({
      status: 200,
      body: { count: 0 },
    });
  });

  it("refuses a member's forged pattern edit and creation, and the jobs tab", async () => {
    const post = async (accessToken: string, action: string, form: Record<string, string>) => {
      const response = await fetch(`${web.url}/topics?/${action}`, {
        method: 'POST',
        body: new URLSearchParams(form),
        headers: {
          origin: web.url,
          accept: 'application/json',
          'x-sveltekit-action': 'true',
          'content-type': 'application/x-www-form-urlencoded',
          cookie: `bfg-access-token=${accessToken}`,
        },
      });
      return JSON.stringify(await response.json());
    };
    const member = await token(who.memberA);
    const fields = { pattern: '#', parser: 'generic-json', parser_config: '{}', is_active: 'on' };
    expect(await post(member, 'updatePattern', { id: patternA, ...fields })).toContain('403');
    expect(await post(member, 'createPattern', { connection_id: connA, ...fields })).toContain('403');
    const patterns = await db.sql<{ pattern: string }[]>`select pattern from mqtt_topic where connection_id = ${connA}`;
    expect(patterns).toEqual([{ pattern: 'a/+gw/data' }]);

    const jobsTab = (accessToken: string) =>
      fetch(`${web.url}/logs?tab=jobs`, { headers: { cookie: `bfg-access-token=${accessToken}` }, redirect: 'manual' });
    const refused = await jobsTab(member);
    expect(refused.status).toBe(403);
    expect(await refused.text()).not.toContain('archive_access_probe');
    const shown = await jobsTab(await token(who.admin));
    expect(shown.status).toBe(200);
    expect(await shown.text()).toContain('data-testid="jobs"');
  });
});
