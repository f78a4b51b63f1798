import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { Inbox } from './wait.ts';

/** A phx_join the fake server accepted: the test decides what the channel hears next. */
export interface FakeJoin {
  topic: string;
  joinRef: string;
  payload: Record<string, unknown>;
  /** Sends a channel message as the channel process does (join_ref set, ref null): `system`, `phx_close`. */
  push(event: string, payload: Record<string, unknown>): void;
  /** Sends a message as Realtime's fastlane does (both refs null): `postgres_changes`, `broadcast`. */
  fastlane(event: string, payload: Record<string, unknown>): void;
}

export interface FakeRealtime {
  /** Base URL for supabase-js (`createClient(url, key)`). */
  url: string;
  joins: Inbox<FakeJoin>;
  close(): Promise<void>;
}

type Frame = [string | null, string | null, string, string, Record<string, unknown>];

/**
 * A bare Phoenix endpoint on loopback speaking vsn 2.0.0 as Supabase Realtime does, up to the join:
 * it answers heartbeats, accepts every phx_join (echoing its postgres_changes with ids) and
 * phx_leave, and sends nothing else by itself — so a test can hold back or repeat the `system`
 * messages that the real servers send at once.
 */
export async function startFakeRealtime(): Promise<FakeRealtime> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, path: '/realtime/v1/websocket' });
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  const joins = new Inbox<FakeJoin>();
  const send = (ws: WebSocket, frame: Frame) => ws.send(JSON.stringify(frame));
  wss.on('connection', (ws) => {
    ws.on('message', (data: Buffer) => {
      const [joinRef, ref, topic, event, payload] = JSON.parse(data.toString('utf8')) as Frame;
      const reply = (response: Record<string, unknown>) =>
        send(ws, [joinRef, ref, topic, 'phx_reply', { status: 'ok', response }]);
      if (event === 'heartbeat') return reply({});
      if (event === 'phx_leave') {
        reply({});
        return send(ws, [joinRef, joinRef, topic, 'phx_close', {}]);
      }
      if (event !== 'phx_join') return;
      const config = (payload['config'] ?? {}) as { postgres_changes?: Record<string, unknown>[] };
      reply({ postgres_changes: (config.postgres_changes ?? []).map((params, i) => ({ ...params, id: 1000 + i })) });
      joins.push({
        topic,
        joinRef: joinRef ?? '',
        payload,
        push: (name, body) => send(ws, [joinRef, name === 'phx_close' ? joinRef : null, topic, name, body]),
        fastlane: (name, body) => send(ws, [null, null, topic, name, body]),
      });
    });
  });
  const { port } = wss.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    joins,
    async close() {
      for (const client of wss.clients) client.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}
