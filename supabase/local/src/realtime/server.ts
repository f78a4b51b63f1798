import http from 'node:http';
import type { Sql } from 'postgres';
import { WebSocketServer } from 'ws';
import { LocalStackError } from '../errors.ts';
import { canReadTopic, canWriteTopic } from './authorization.ts';
import { startChangeFeed } from './change-feed.ts';
import { ChangeDispatcher } from './dispatcher.ts';
import { verifyJwt } from './jwt.ts';
import { RowAccess } from './row-access.ts';
import { parseVsn } from './serializer.ts';
import { ChannelRegistry } from './channel-registry.ts';
import { SocketSession, type SessionHost, type SessionLimits } from './socket-session.ts';
import type { TypeInfo } from './wal-values.ts';

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
  /** Overrides of the per-socket limits (defaults: Supabase's, see DEFAULT_LIMITS). */
  limits?: Partial<SessionLimits>;
  /** Plain HTTP requests go here first (the Auth API at /auth/v1); false = not its path, 404. */
  httpHandler?: (req: http.IncomingMessage, res: http.ServerResponse) => Promise<boolean>;
}

/**
 * Limits as Supabase Realtime sets them by default: max_payload_size_in_kb 3000 (client
 * broadcasts), max_events_per_second 100 (client messages), and a bound on what one socket may
 * hold unsent (Phoenix has none; ours keeps a stalled reader from growing the server's memory).
 */
export const DEFAULT_LIMITS: SessionLimits = {
  maxBufferedBytes: 4 * 1024 * 1024,
  maxPayloadBytes: 3_000 * 1000 + 500,
  maxEventsPerSecond: 100,
};

export interface RealtimeServer {
  readonly port: number;
  /** Base URL to give supabase-js (`createClient(url, key)`); the socket is at /realtime/v1/websocket. */
  readonly url: string;
  /** Dispatch counters (changes, frames, rounds, peak queue), for benchmarks. */
  readonly stats: ChangeDispatcher['totals'];
  close(): Promise<void>;
}

const PATHS = new Set(['/realtime/v1/websocket', '/socket/websocket']);

/**
 * A local server speaking the Supabase Realtime protocol, so that the unmodified supabase-js client
 * works against the local stack as against Supabase: `/realtime/v1/websocket` (and Realtime's own
 * `/socket/websocket`), vsn 1.0.0 and 2.0.0, JWT-checked connects and joins, private channels
 * authorized by the RLS policies on realtime.messages (read to join, write to broadcast),
 * postgres_changes with RLS and column privileges, and Broadcast from Database.
 */
export async function startRealtimeServer(options: RealtimeServerOptions): Promise<RealtimeServer> {
  const host = options.host ?? '127.0.0.1';
  const log = options.log ?? (() => undefined);
  const limits = { ...DEFAULT_LIMITS, ...options.limits };
  const secret = new TextEncoder().encode(options.jwtSecret);
  const registry = new ChannelRegistry(options.sql);

  let replicationConnected = false;
  let connects = 0;
  // Assigned once the feed exists; the dispatcher, made before it, confirms through it.
  let confirm: (lsn: bigint) => void = () => undefined;
  const types = new Map<number, TypeInfo>();
  const resync = (reason: string) => {
    log(`realtime: telling every channel to reload (${reason})`);
    registry.resync(reason);
  };
  const dispatcher = new ChangeDispatcher({
    rowAccess: new RowAccess(options.sql),
    subscriptions: registry.subscriptions,
    audience: (topic, isPrivate) => registry.audience(topic, isPrivate),
    types,
    confirm: (lsn) => confirm(lsn),
    onLoss: resync,
    log,
  });
  const feed = await startChangeFeed(
    options.databaseUrl,
    ['supabase_realtime', 'supabase_realtime_messages_publication'],
    types,
    {
      push: (batch) => dispatcher.push(batch),
      waitForRoom: () => dispatcher.waitForRoom(),
      onDisconnect() {
        replicationConnected = false;
        log('realtime: replication stream lost; reconnecting');
      },
      onConnect() {
        replicationConnected = true;
        log('realtime: replication connected');
        if (connects++ === 0) return;
        resync('the replication stream was re-made');
      },
    },
  );
  confirm = (lsn) => feed.confirm(lsn);

  const sessionHost: SessionHost = {
    jwtSecret: secret,
    limits,
    canReadTopic: (claims, subTopic) => canReadTopic(options.sql, claims, subTopic),
    canWriteTopic: (claims, subTopic) => canWriteTopic(options.sql, claims, subTopic),
    registry,
    replicationConnected: () => replicationConnected,
    log,
  };

  const retainMs = options.retainMessagesMs ?? 3_600_000;
  const prune =
    retainMs > 0
      ? setInterval(
          () => {
            options.sql`delete from realtime.messages where inserted_at < (now() at time zone 'UTC') - ${retainMs / 1000} * interval '1 second'`.catch(
              (err: unknown) => log(`realtime: pruning realtime.messages failed: ${String(err)}`),
            );
          },
          Math.min(retainMs, 600_000),
        )
      : undefined;
  prune?.unref();

  const server = http.createServer((req, res) => {
    void (options.httpHandler?.(req, res) ?? Promise.resolve(false)).then(
      (handled) =>
        handled ||
        res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'Not found' })),
      (err: unknown) => {
        log(`realtime: HTTP handler failed: ${String(err)}`);
        res.destroy();
      },
    );
  });
  // Realtime's websocket max_frame_size.
  const wss = new WebSocketServer({ noServer: true, maxPayload: 5_000_000 });

  server.on('upgrade', (req, socket, head) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const refuse = (status: number, error: string) => {
        socket.end(
          `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n${JSON.stringify({ error })}`,
        );
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

  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          err.code === 'EADDRINUSE'
            ? new LocalStackError(
                `Port ${options.port} on ${host} is already in use, so the realtime server cannot listen there. ` +
                  'Stop whatever uses it or choose another port (BFG_REALTIME_PORT).',
              )
            : err,
        ),
      );
      server.listen(options.port, host, () => resolve());
    });
  } catch (err) {
    // Nothing of a server that never listened may keep the process alive.
    clearInterval(prune);
    await feed.stop();
    throw err;
  }
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  return {
    port,
    url: `http://${host}:${port}`,
    stats: dispatcher.totals,
    async close() {
      clearInterval(prune);
      await feed.stop();
      for (const client of wss.clients) client.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
