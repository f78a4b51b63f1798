import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import type { RealtimeChannel } from '@supabase/supabase-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { newSite } from '../support/factories.ts';
import { follow, startRealtimeFixture, type RealtimeFixture } from '../support/realtime.ts';

/**
 * The local Realtime server against the unmodified official client (supabase-js): connect with
 * the anon key, join public and private channels, broadcast, and the error replies of the spec.
 */

let rt: RealtimeFixture;
let db: RealtimeFixture['db'];
let server: RealtimeFixture['server'];
let anonKey: string;

beforeAll(async () => {
  rt = await startRealtimeFixture();
  ({ db, server, anonKey } = rt);
});
afterEach(() => rt.reset());
afterAll(() => rt?.close());

/** A supabase-js client; with a user token, Realtime uses it (as after sign-in) for every join. */
const client = (accessToken?: string) => rt.client(accessToken);
const userToken = (options: { member?: string; admin?: boolean; expiresIn?: number } = {}) => rt.userToken(options);

/**
 * Subscribes and resolves with the first terminal status (and its error, if any); for a channel
 * with postgres_changes bindings, a SUBSCRIBED also waits for the feed's "Subscribed to
 * PostgreSQL" (Realtime subscribes the feed after the join reply).
 */
async function subscribe(channel: RealtimeChannel): Promise<{ status: string; error?: Error }> {
  const hasFeed = channel.bindings['postgres_changes']?.length;
  const followed = follow(channel);
  let status = await followed.statuses.next('a subscribe status', 15_000);
  while (!['SUBSCRIBED', 'CHANNEL_ERROR', 'TIMED_OUT', 'CLOSED'].includes(status))
    status = await followed.statuses.next('a subscribe status', 15_000);
  if (status === 'SUBSCRIBED' && hasFeed) await followed.feedLive();
  const error = followed.errors.at(-1);
  return error ? { status, error } : { status };
}

describe('local Realtime server with supabase-js', () => {
  it('joins a public channel and relays broadcasts to the other members only', async () => {
    const topic = `room-${randomUUID()}`;
    const a = (await client()).channel(topic);
    const b = (await client()).channel(topic);
    const received: unknown[] = [];
    const got = new Promise<void>((resolve) =>
      b.on('broadcast', { event: 'ping' }, (msg) => {
        received.push(msg['payload']);
        resolve();
      }),
    );
    const ownEcho: unknown[] = [];
    a.on('broadcast', { event: 'ping' }, (msg) => ownEcho.push(msg));
    expect(await subscribe(a)).toEqual({ status: 'SUBSCRIBED' });
    expect(await subscribe(b)).toEqual({ status: 'SUBSCRIBED' });
    await a.send({ type: 'broadcast', event: 'ping', payload: { n: 1 } });
    await got;
    expect(received).toEqual([{ n: 1 }]);
    expect(ownEcho).toEqual([]);
  });

  it('echoes postgres_changes bindings with ids the client accepts (no binding mismatch)', async () => {
    const channel = (await client(await userToken()))
      .channel(`changes-${randomUUID()}`)
      .on('postgres_changes', { event: '*', schema: 'public', table: 'mqtt_connection' }, () => undefined)
      .on('postgres_changes', { event: 'UPDATE', schema: 'public', table: 'site', filter: 'id=eq.1' }, () => undefined);
    expect(await subscribe(channel)).toEqual({ status: 'SUBSCRIBED' });
  });

  it('admits a site member to the private site channel and refuses a non-member with the spec reason', async () => {
    const site = await newSite(db.sql);
    const member = await client(await userToken({ member: site.id }));
    expect(await subscribe(member.channel(`site:${site.id}`, { config: { private: true } }))).toEqual({
      status: 'SUBSCRIBED',
    });

    const outsider = await client(await userToken());
    const refused = await subscribe(outsider.channel(`site:${site.id}`, { config: { private: true } }));
    expect(refused.status).toBe('CHANNEL_ERROR');
    expect(refused.error?.message).toBe(
      `Unauthorized: You do not have permissions to read from this Channel topic: site:${site.id}`,
    );

    const admin = await client(await userToken({ admin: true }));
    expect(await subscribe(admin.channel(`site:${site.id}`, { config: { private: true } }))).toEqual({
      status: 'SUBSCRIBED',
    });
  });

  it('refuses a join with an expired token', async () => {
    const expired = await client(await userToken({ expiresIn: -60 }));
    const refused = await subscribe(expired.channel(`room-${randomUUID()}`));
    expect(refused.status).toBe('CHANNEL_ERROR');
    expect(refused.error?.message).toMatch(/^InvalidJWTToken: Token has expired \d+ seconds ago$/);
  });

  it("refuses the websocket upgrade without a valid apikey, with Realtime's error body", async () => {
    const { port } = new URL(server.url);
    const response = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request({
        host: '127.0.0.1',
        port,
        path: '/realtime/v1/websocket?apikey=not-a-jwt&vsn=2.0.0',
        headers: {
          connection: 'Upgrade',
          upgrade: 'websocket',
          'sec-websocket-version': '13',
          'sec-websocket-key': randomBytes(16).toString('base64'),
        },
      });
      req.on('response', (res) => {
        let body = '';
        res.on('data', (chunk: Buffer) => (body += chunk.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });
    expect(response.status).toBe(401);
    expect(JSON.parse(response.body)).toEqual({ error: 'The token provided is not a valid JWT' });
  });

  it("answers unknown topics and the 101st channel with the spec's reasons", async () => {
    const ws = new WebSocket(`${server.url.replace('http', 'ws')}/realtime/v1/websocket?apikey=${anonKey}&vsn=2.0.0`);
    const replies = new Map<string, unknown>();
    const done = new Promise<void>((resolve, reject) => {
      ws.onmessage = (event) => {
        const [, ref, , , payload] = JSON.parse(String(event.data)) as [string | null, string, string, string, unknown];
        replies.set(ref, payload);
        if (replies.size === 102) resolve();
      };
      ws.onerror = () => reject(new Error('websocket error'));
    });
    await new Promise<void>((resolve) => (ws.onopen = () => resolve()));
    ws.send(JSON.stringify(['u', 'u', 'elsewhere:1', 'phx_join', {}]));
    for (let i = 0; i <= 100; i++)
      ws.send(JSON.stringify([String(i), String(i), `realtime:many-${i}`, 'phx_join', { config: {} }]));
    await done;
    ws.close();
    expect(replies.get('u')).toEqual({ status: 'error', response: { reason: 'unmatched topic' } });
    expect(replies.get('99')).toEqual({ status: 'ok', response: { postgres_changes: [] } });
    expect(replies.get('100')).toEqual({
      status: 'error',
      response: { reason: 'ChannelRateLimitReached: Too many channels' },
    });
  });

  it('answers heartbeats in vsn 1.0.0 (objects) and 2.0.0 (arrays)', async () => {
    for (const [vsn, frame, expected] of [
      [
        '2.0.0',
        JSON.stringify([null, '7', 'phoenix', 'heartbeat', {}]),
        [null, '7', 'phoenix', 'phx_reply', { status: 'ok', response: {} }],
      ],
      [
        '1.0.0',
        JSON.stringify({ topic: 'phoenix', event: 'heartbeat', payload: {}, ref: '7' }),
        { topic: 'phoenix', event: 'phx_reply', payload: { status: 'ok', response: {} }, ref: '7' },
      ],
    ] as const) {
      const ws = new WebSocket(`${server.url.replace('http', 'ws')}/socket/websocket?apikey=${anonKey}&vsn=${vsn}`);
      const reply = await new Promise<unknown>((resolve, reject) => {
        ws.onopen = () => ws.send(frame);
        ws.onmessage = (event) => resolve(JSON.parse(String(event.data)));
        ws.onerror = () => reject(new Error('websocket error'));
      });
      ws.close();
      expect(reply).toEqual(expected);
    }
  });
});

describe('changes from Postgres through the local Realtime server', () => {
  /** Collects callbacks into a queue the test awaits in order. */
  function inbox<T>() {
    const items: T[] = [];
    const waiters: ((item: T) => void)[] = [];
    return {
      push: (item: T) => (waiters.length ? waiters.shift()!(item) : items.push(item)),
      next: () =>
        new Promise<T>((resolve, reject) => {
          if (items.length) return resolve(items.shift()!);
          const timer = setTimeout(() => reject(new Error('no message within 5 s')), 5_000);
          waiters.push((item) => {
            clearTimeout(timer);
            resolve(item);
          });
        }),
    };
  }

  it('delivers INSERT/UPDATE/DELETE with typed records, honouring filters', async () => {
    const admin = await client(await userToken({ admin: true }));
    const all = inbox<Record<string, unknown>>();
    const filtered = inbox<Record<string, unknown>>();
    const site = await newSite(db.sql);
    const other = await newSite(db.sql);
    const channel = admin
      .channel(`changes-${randomUUID()}`)
      .on('postgres_changes', { event: '*', schema: 'public', table: 'mqtt_connection' }, (p) =>
        all.push(p as unknown as Record<string, unknown>),
      )
      .on(
        'postgres_changes',
        { event: 'UPDATE', schema: 'public', table: 'mqtt_connection', filter: `site_id=eq.${other.id}` },
        (p) => filtered.push(p as unknown as Record<string, unknown>),
      );
    expect(await subscribe(channel)).toEqual({ status: 'SUBSCRIBED' });

    const [conn] = await db.sql<{ id: string }[]>`
      insert into mqtt_connection (site_id, host, port) values (${site.id}, 'broker.test', 1883) returning id::text as id`;
    const inserted = await all.next();
    expect(inserted).toMatchObject({ schema: 'public', table: 'mqtt_connection', eventType: 'INSERT', errors: null });
    expect(inserted['new']).toMatchObject({
      id: Number(conn!.id),
      host: 'broker.test',
      port: 1883,
      is_active: false,
      subscribe_filters: [`${site.slug}/#`],
    });
    expect(inserted['old']).toEqual({});

    await db.sql`update mqtt_connection set is_active = true where id = ${conn!.id}`;
    expect(await all.next()).toMatchObject({ eventType: 'UPDATE', new: { is_active: true } });

    const [otherConn] = await db.sql<{ id: string }[]>`
      insert into mqtt_connection (site_id, host) values (${other.id}, 'other.test') returning id::text as id`;
    await all.next();
    await db.sql`update mqtt_connection set port = 8883 where id = ${otherConn!.id}`;
    expect(await all.next()).toMatchObject({ eventType: 'UPDATE', new: { port: 8883 } });
    // Only the filtered binding's own site: the earlier update of `site` never reached it.
    expect(await filtered.next()).toMatchObject({
      eventType: 'UPDATE',
      new: { id: Number(otherConn!.id), port: 8883 },
    });

    await db.sql`delete from mqtt_connection where id = ${conn!.id}`;
    expect(await all.next()).toMatchObject({ eventType: 'DELETE', old: { id: Number(conn!.id) }, new: {} });
  });

  it('delivers a row only to subscribers whose RLS lets them read it', async () => {
    const siteA = await newSite(db.sql);
    const siteB = await newSite(db.sql);
    const memberOfB = await client(await userToken({ member: siteB.id }));
    const seen = inbox<Record<string, unknown>>();
    const channel = memberOfB
      .channel(`rls-${randomUUID()}`)
      .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'mqtt_connection' }, (p) =>
        seen.push(p as unknown as Record<string, unknown>),
      );
    expect(await subscribe(channel)).toEqual({ status: 'SUBSCRIBED' });
    await db.sql`insert into mqtt_connection (site_id, host) values (${siteA.id}, 'hidden.test')`;
    await db.sql`insert into mqtt_connection (site_id, host) values (${siteB.id}, 'visible.test')`;
    // The first (and only) delivery is site B's: site A's row was never sent to this member.
    expect(await seen.next()).toMatchObject({ new: { host: 'visible.test' } });
  });

  it('carries Broadcast from Database to the authorized private site channel', async () => {
    const site = await newSite(db.sql);
    const member = await client(await userToken({ member: site.id }));
    const got = inbox<Record<string, unknown>>();
    const channel = member
      .channel(`site:${site.id}`, { config: { private: true } })
      .on('broadcast', { event: 'changes' }, (m) => got.push(m));
    expect(await subscribe(channel)).toEqual({ status: 'SUBSCRIBED' });
    await db.sql`insert into gateway (site_id, ident, online) values (${site.id}, 'gw-live', true)`;
    // The ingestor's broadcaster sends what changed (see site-change-broadcasts.test.ts); here by hand.
    await db.sql`select private.send_site_changes(250)`;
    const message = await got.next();
    expect(message).toMatchObject({ type: 'broadcast', event: 'changes', meta: { id: expect.any(String) as unknown } });
    expect((message['payload'] as { gateways: { ident: string }[] }).gateways.map((r) => r.ident)).toEqual(['gw-live']);
  });
});
