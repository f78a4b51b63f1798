import http from 'node:http';
import type { Sql } from 'postgres';
import { WebSocketServer } from 'ws';
import { LocalStackError } from '../errors.ts';
import { canReadTopic } from './authorization.ts';
import { startChangeFeed } from './change-feed.ts';
import { ChangeDispatcher, type Subscribers } from './dispatcher.ts';
import { verifyJwt } from './jwt.ts';
import { parseVsn } from './serializer.ts';
import { SocketSession, type SessionHost } from './socket-session.ts';

export interface RealtimeServerOptions {
  port: number;
  host?: string;
  /** The project's JWT secret (HS256), as Supabase's `JWT_SECRET`. */
  jwtSecret: string;
  /** A superuser connection to the application database (for Realtime Authorization and RLS checks). */
  sql: Sql;
  /** URL of that database, for the logical replication connection (superuser or replication role). */
  databaseUrl: string;
  log?: (message: string) => void;
  /**
   * Delete Broadcast-from-Database messages older than this from realtime.messages (Supabase drops
   * old daily partitions; locally one default partition takes them all). 0 = never.
   */
  retainMessagesMs?: number;
}

export interface RealtimeServer {
  readonly port: number;
  /** Base URL to give supabase-js (`createClient(url, key)`); the socket is at /realtime/v1/websocket. */
  readonly url: string;
  close(): Promise<void>;
}

const PATHS = new Set(['/realtime/v1/websocket', '/socket/websocket']);

/**
 * A local server speaking the Supabase Realtime protocol, so that the unmodified supabase-js client
 * works against the local stack as against Supabase: `/realtime/v1/websocket` (and Realtime's own
 * `/socket/websocket`), vsn 1.0.0 and 2.0.0, JWT-checked connects and joins, private channels
 * authorized by the RLS policies on realtime.messages, and client broadcasts.
 */
export async function startRealtimeServer(options: RealtimeServerOptions): Promise<RealtimeServer> {
  const host = options.host ?? '127.0.0.1';
  const log = options.log ?? (() => undefined);
  const secret = new TextEncoder().encode(options.jwtSecret);
  const subscribers: Subscribers = new Map();
  const dispatcher = new ChangeDispatcher(options.sql, subscribers, log);
  let replicationConnects = 0;
  const feed = await startChangeFeed(
    options.databaseUrl,
    ['supabase_realtime', 'supabase_realtime_messages_publication'],
    (change) => dispatcher.push(change),
    () => {
      log('realtime: replication connected');
      // After a reconnect (Postgres restarted): channels following changes get phx_error and the
      // clients rejoin, so their apps reload state on SUBSCRIBED; missed changes are not replayed.
      if (replicationConnects++ === 0) return;
      for (const entries of [...subscribers.values()]) {
        for (const { session, channel } of [...entries]) if (channel.postgresChanges.length > 0) session.errorChannel(channel);
      }
    },
  );

  const sessionHost: SessionHost = {
    jwtSecret: secret,
    canReadTopic: (claims, subTopic) => canReadTopic(options.sql, claims, subTopic),
    onJoin(session, channel) {
      const set = subscribers.get(channel.topic) ?? new Set();
      set.add({ session, channel });
      subscribers.set(channel.topic, set);
    },
    onLeave(session, channel) {
      const set = subscribers.get(channel.topic);
      if (!set) return;
      for (const entry of set) if (entry.session === session && entry.channel === channel) set.delete(entry);
      if (set.size === 0) subscribers.delete(channel.topic);
    },
    broadcast(from, topic, payload) {
      for (const { session, channel } of subscribers.get(topic) ?? []) {
        if (session === from && !channel.self) continue;
        session.send({ joinRef: null, ref: null, topic, event: 'broadcast', payload });
      }
    },
    log,
  };

  const retainMs = options.retainMessagesMs ?? 3_600_000;
  const prune = retainMs > 0
    ? setInterval(() => {
        options.sql`delete from realtime.messages where inserted_at < (now() at time zone 'UTC') - ${retainMs / 1000} * interval '1 second'`
          .catch((err: unknown) => log(`realtime: pruning realtime.messages failed: ${String(err)}`));
      }, Math.min(retainMs, 600_000))
    : undefined;
  prune?.unref();

  const server = http.createServer((_req, res) => {
    res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'Not found' }));
  });
  const wss = new WebSocketServer({ noServer: true, maxPayload: 5_000_000 });

  server.on('upgrade', (req, socket, head) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const refuse = (status: number, error: string) => {
        socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n${JSON.stringify({ error })}`);
      };
      if (!PATHS.has(url.pathname)) return refuse(404, 'Not found');
      const vsn = parseVsn(url.searchParams.get('vsn'));
      if (!vsn) return refuse(400, 'Unsupported serializer version');
      const header = req.headers['x-api-key'];
      const apikey = (Array.isArray(header) ? header[0] : header) ?? url.searchParams.get('apikey') ?? undefined;
      const verified = await verifyJwt(apikey, secret);
      if (!verified.ok) return refuse(401, verified.message);
      wss.handleUpgrade(req, socket, head, (ws) => new SocketSession(ws, vsn, verified.claims, sessionHost));
    })().catch((err: unknown) => {
      log(`realtime: upgrade failed: ${String(err)}`);
      socket.destroy();
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'EADDRINUSE'
        ? new LocalStackError(`Port ${options.port} on ${host} is already in use, so the realtime server cannot listen there (BFG_REALTIME_PORT).`)
        : err));
    server.listen(options.port, host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  return {
    port,
    url: `http://${host}:${port}`,
    async close() {
      clearInterval(prune);
      await feed.stop();
      for (const client of wss.clients) client.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
