import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import { createClient, type RealtimeChannel, type SupabaseClient } from '@supabase/supabase-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { getFreePort, startRealtimeServer, type RealtimeServer } from '@bfg/local';
import { newUser } from '../support/claims.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { addMember, newSite } from '../support/factories.ts';
import { signJwt } from '../support/jwt.ts';

/**
 * The local Realtime server against the unmodified official client (supabase-js): connect with
 * the anon key, join public and private channels, broadcast, and the error replies of the spec.
 */

const secret = randomBytes(32).toString('hex');
let db: TestDatabase;
let server: RealtimeServer;
let anonKey: string;
const clients: SupabaseClient[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  server = await startRealtimeServer({ port: await getFreePort(), jwtSecret: secret, sql: db.sql });
  anonKey = await signJwt(secret, { role: 'anon', iss: 'supabase' });
});
afterEach(async () => {
  for (const client of clients.splice(0)) await client.removeAllChannels();
});
afterAll(async () => {
  await server?.close();
  await db?.drop();
});

/** A supabase-js client; with a user token, Realtime uses it (as after sign-in) for every join. */
async function client(accessToken?: string): Promise<SupabaseClient> {
  const supabase = createClient(server.url, anonKey, { auth: { persistSession: false, autoRefreshToken: false } });
  if (accessToken) await supabase.realtime.setAuth(accessToken);
  clients.push(supabase);
  return supabase;
}

/** Subscribes and resolves with the first terminal status (and its error, if any). */
function subscribe(channel: RealtimeChannel): Promise<{ status: string; error?: Error }> {
  return new Promise((resolve) => {
    channel.subscribe((state, error) => {
      const status = String(state);
      if (['SUBSCRIBED', 'CHANNEL_ERROR', 'TIMED_OUT', 'CLOSED'].includes(status)) resolve(error ? { status, error } : { status });
    });
  });
}

async function userToken(options: { member?: string; admin?: boolean; expiresIn?: number } = {}): Promise<string> {
  const id = await newUser(db.sql);
  if (options.member) await addMember(db.sql, options.member, id);
  return signJwt(secret, {
    sub: id, role: 'authenticated', email: `${id}@example.test`,
    app_metadata: options.admin ? { provider: 'email', role: 'admin' } : { provider: 'email' },
  }, options.expiresIn ?? 3600);
}

describe('local Realtime server with supabase-js', () => {
  it('joins a public channel and relays broadcasts to the other members only', async () => {
    const topic = `room-${randomUUID()}`;
    const a = (await client()).channel(topic);
    const b = (await client()).channel(topic);
    const received: unknown[] = [];
    const got = new Promise<void>((resolve) => b.on('broadcast', { event: 'ping' }, (msg) => {
      received.push(msg['payload']);
      resolve();
    }));
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
    const channel = (await client()).channel(`changes-${randomUUID()}`)
      .on('postgres_changes', { event: '*', schema: 'public', table: 'mqtt_connection' }, () => undefined)
      .on('postgres_changes', { event: 'UPDATE', schema: 'public', table: 'site', filter: 'id=eq.1' }, () => undefined);
    expect(await subscribe(channel)).toEqual({ status: 'SUBSCRIBED' });
  });

  it('admits a site member to the private site channel and refuses a non-member with the spec reason', async () => {
    const site = await newSite(db.sql);
    const member = await client(await userToken({ member: site.id }));
    expect(await subscribe(member.channel(`site:${site.id}`, { config: { private: true } }))).toEqual({ status: 'SUBSCRIBED' });

    const outsider = await client(await userToken());
    const refused = await subscribe(outsider.channel(`site:${site.id}`, { config: { private: true } }));
    expect(refused.status).toBe('CHANNEL_ERROR');
    expect(refused.error?.message).toBe(`Unauthorized: You do not have permissions to read from this Channel topic: site:${site.id}`);

    const admin = await client(await userToken({ admin: true }));
    expect(await subscribe(admin.channel(`site:${site.id}`, { config: { private: true } }))).toEqual({ status: 'SUBSCRIBED' });
  });

  it('refuses a join with an expired token', async () => {
    const expired = await client(await userToken({ expiresIn: -60 }));
    const refused = await subscribe(expired.channel(`room-${randomUUID()}`));
    expect(refused.status).toBe('CHANNEL_ERROR');
    expect(refused.error?.message).toMatch(/^InvalidJWTToken: Token has expired \d+ seconds ago$/);
  });

  it('refuses the websocket upgrade without a valid apikey, with Realtime\'s error body', async () => {
    const { port } = new URL(server.url);
    const response = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request({
        host: '127.0.0.1', port, path: '/realtime/v1/websocket?apikey=not-a-jwt&vsn=2.0.0',
        headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': randomBytes(16).toString('base64') },
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

  it('answers heartbeats in vsn 1.0.0 (objects) and 2.0.0 (arrays)', async () => {
    for (const [vsn, frame, expected] of [
      ['2.0.0', JSON.stringify([null, '7', 'phoenix', 'heartbeat', {}]), [null, '7', 'phoenix', 'phx_reply', { status: 'ok', response: {} }]],
      ['1.0.0', JSON.stringify({ topic: 'phoenix', event: 'heartbeat', payload: {}, ref: '7' }), { topic: 'phoenix', event: 'phx_reply', payload: { status: 'ok', response: {} }, ref: '7' }],
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
