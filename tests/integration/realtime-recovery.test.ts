import { randomBytes, randomUUID } from 'node:crypto';
import path from 'node:path';
import { createClient } from '@supabase/supabase-js';
import postgres from 'postgres';
import { afterEach, describe, expect, it } from 'vitest';
import { getFreePort, migrate, startEmbeddedPostgres, startRealtimeServer } from '@bfg/local';
import { signJwt } from '../support/jwt.ts';
import { follow } from '../support/realtime.ts';
import { makeTempDir } from '../support/temp-dir.ts';
import { Inbox } from '../support/wait.ts';

/**
 * Recovery as Supabase Realtime does it and the official client sees it: after a Postgres restart
 * the feed is subscribed again and says so with a new "Subscribed to PostgreSQL" system message
 * (no phx_error, no new SUBSCRIBED); after a server restart the socket reconnects and the channel
 * rejoins (SUBSCRIBED, then the feed message). New changes arrive, nothing is replayed. A token
 * refresh keeps the channel with the new claims; expiry closes it with Realtime's system error.
 */

const secret = randomBytes(32).toString('hex');
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
});

async function setUp() {
  const dir = await makeTempDir('rt-recovery');
  cleanups.push(() => dir.remove());
  const port = await getFreePort();
  const start = () =>
    startEmbeddedPostgres({
      dataDir: path.join(dir.path, 'data'),
      port,
      password: 'pw-' + secret.slice(0, 16),
      ephemeral: true,
    });
  const pg = { server: await start() };
  cleanups.push(() => pg.server.stop());
  const url = pg.server.urlFor('postgres');
  const sql = postgres(url, { max: 4, onnotice: () => undefined });
  cleanups.push(() => sql.end({ timeout: 1 }));
  await migrate(sql);
  const realtimePort = await getFreePort();
  const startServer = () =>
    startRealtimeServer({
      port: realtimePort,
      jwtSecret: secret,
      sql,
      databaseUrl: url,
      log: process.env['RT_DEBUG'] ? (m) => console.log(new Date().toISOString(), m) : undefined,
    });
  const rt = { server: await startServer() };
  cleanups.push(() => rt.server.close());
  const anon = await signJwt(secret, { role: 'anon' });
  const admin = await signJwt(secret, { role: 'authenticated', sub: randomUUID(), app_metadata: { role: 'admin' } });
  // The token comes from the client's accessToken callback, as with a signed-in user: supabase-js
  // asks it again before every reconnect, so rejoins carry it too.
  let token = admin;
  const supabase = createClient(rt.server.url, anon, { accessToken: () => Promise.resolve(token) });
  cleanups.push(() => supabase.removeAllChannels());
  await supabase.realtime.setAuth();
  const useToken = async (next: string) => {
    token = next;
    await supabase.realtime.setAuth();
  };
  return { pg, start, sql, rt, startServer, supabase, useToken };
}

async function siteRow(sql: postgres.Sql): Promise<string> {
  const slug = `s${randomBytes(3).toString('hex')}`;
  const [row] = await sql<
    { id: string }[]
  >`insert into site (slug, name) values (${slug}, ${slug}) returning id::text as id`;
  return row!.id;
}

describe('realtime recovery', () => {
  /** A channel following site inserts; `restart` breaks the path to the client in some way. */
  async function recoversAfter(
    restart: (env: Awaited<ReturnType<typeof setUp>>) => Promise<void>,
    expectRejoin: boolean,
  ) {
    const env = await setUp();
    const changes = new Inbox<Record<string, unknown>>();
    const channel = follow(
      env.supabase
        .channel(`recover-${randomUUID()}`)
        .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'site' }, (p) => changes.push(p.new)),
    );
    expect(await channel.statuses.next('SUBSCRIBED')).toBe('SUBSCRIBED');
    await channel.feedLive();
    const before = await siteRow(env.sql);
    expect((await changes.next('the first insert'))['id']).toBe(Number(before));

    await restart(env);
    if (expectRejoin) {
      let status = await channel.statuses.next('a status after the restart', 15_000);
      while (status !== 'SUBSCRIBED') status = await channel.statuses.next('SUBSCRIBED again', 15_000);
    }
    // Apps reload their snapshot on this message: it is the only sign that changes flow again.
    await channel.feedLive('the feed after the restart', 15_000);
    const after = await siteRow(env.sql);
    expect((await changes.next('the insert after the restart', 10_000))['id']).toBe(Number(after));
    if (!expectRejoin) expect(await channel.statuses.next('no other status', 200).catch(() => 'none')).toBe('none');
  }

  it('re-subscribes the feed after a Postgres restart, with a new system message and no rejoin', async () => {
    await recoversAfter(async ({ pg, start }) => {
      await pg.server.stop();
      pg.server = await start();
    }, false);
  });

  it('rejoins after the realtime server restarts', async () => {
    await recoversAfter(async ({ rt, startServer }) => {
      await rt.server.close();
      rt.server = await startServer();
    }, true);
  });

  it('keeps the channel across a token refresh, with the new claims, and closes it when the token expires', async () => {
    const { supabase, sql, useToken } = await setUp();
    const userId = randomUUID();
    await sql`insert into auth.users (id, email) values (${userId}, ${`${userId}@example.test`})`;
    const siteA = await siteRow(sql);
    const siteB = await siteRow(sql);
    await sql`insert into site_member (site_id, user_id) values (${siteA}, ${userId})`;
    await useToken(await signJwt(secret, { role: 'authenticated', sub: userId }));
    const changes = new Inbox<Record<string, unknown>>();
    const channel = follow(
      supabase
        .channel(`refresh-${randomUUID()}`)
        .on('postgres_changes', { event: 'UPDATE', schema: 'public', table: 'site' }, (p) => changes.push(p.new)),
    );
    const { statuses, system } = channel;
    expect(await statuses.next('SUBSCRIBED')).toBe('SUBSCRIBED');
    await channel.feedLive();
    await sql`update site set name = 'seen by member' where id = ${siteB}`;
    await sql`update site set name = 'member site' where id = ${siteA}`;
    expect((await changes.next('the member site update'))['name']).toBe('member site');

    // Refresh to an admin token that expires in 3 s: same channel, admin visibility.
    await useToken(await signJwt(secret, { role: 'authenticated', sub: userId, app_metadata: { role: 'admin' } }, 3));
    await expect
      .poll(
        async () => {
          await sql`update site set name = ${'admin sees ' + Date.now()} where id = ${siteB}`;
          return (await changes.next('an update of a non-member site', 1_000).catch(() => ({ id: -1 })))['id'];
        },
        { timeout: 2_500, interval: 100 },
      )
      .toBe(Number(siteB));

    let message = await system.next('the expiry system message', 6_000);
    while (message['extension'] !== 'system') message = await system.next('the expiry system message', 6_000);
    expect(message).toMatchObject({ extension: 'system', status: 'error' });
    expect(message['message']).toMatch(/^Token has expired \d+ seconds ago$/);
    let status = await statuses.next('CLOSED');
    while (status !== 'CLOSED') status = await statuses.next('CLOSED');
  });
});
