import type { WebSocket } from 'ws';
import { bindingId } from './binding-id.ts';
import type { Subscriber } from './dispatcher.ts';
import type { Binding } from './filters.ts';
import type { ChannelRegistry } from './channel-registry.ts';
import type { Claims } from './jwt.ts';
import { verifyJwt } from './jwt.ts';
import { decode, decodeBinary, encode, encodeShared, type PhoenixMessage, type Vsn } from './serializer.ts';

/** Realtime's default TENANT_MAX_CHANNELS_PER_CLIENT. */
export const MAX_CHANNELS_PER_CLIENT = 100;
/** Phoenix closes a websocket that sent nothing for this long (the client heartbeats every 25 s). */
const IDLE_TIMEOUT_MS = 60_000;
/** Messages a socket may have waiting to be handled before it is closed. */
const MAX_WAITING_MESSAGES = 1_000;
/** Realtime's max_joins_per_second, averaged (as its rate counters) over a minute. */
const MAX_JOINS_PER_MINUTE = 100 * 60;
/** Realtime's replication-ready check interval and timeout (config.exs replication_ready_timeout). */
const REPLICATION_READY_CHECK_MS = 500;
const REPLICATION_READY_TIMEOUT_MS = 60_000;
/** After asking a socket that stopped reading to close, it is cut off this much later. */
const CLOSE_GRACE_MS = 2_000;

export interface SessionLimits {
  /** Bytes waiting to be sent to one socket before it is closed as too slow. */
  maxBufferedBytes: number;
  /** Largest client broadcast payload in bytes (Realtime: max_payload_size_in_kb × 1000 + 500). */
  maxPayloadBytes: number;
  /** Client messages per second on one socket before its channels are shut down (max_events_per_second). */
  maxEventsPerSecond: number;
}

/** One joined channel: its audience, claims and bindings; also what the dispatcher sends to. */
export class JoinedChannel implements Subscriber {
  open = true;
  /** Realtime Authorization's write check for client broadcasts, made once per token. */
  canWrite: Promise<boolean> | undefined;
  /** postgres_changes subscriptions registered for the channel (removed when it closes). */
  subscriptions: unknown[] = [];
  /** Bumped by every (re)subscription, so that only the latest of overlapping ones is kept. */
  subscribeGeneration = 0;
  readonly session: SocketSession;
  readonly topic: string;
  readonly subTopic: string;
  readonly joinRef: string;
  claims: Claims;
  /** The JWT the claims came from (the apikey's when the join carried none). */
  token: string | undefined;
  readonly isPrivate: boolean;
  /** Receive own broadcasts (config.broadcast.self). */
  readonly self: boolean;
  /** Reply to each broadcast push (config.broadcast.ack). */
  readonly ack: boolean;
  /** Wants the "Replication connection established" system message (config.broadcast.replication_ready). */
  readonly replicationReady: boolean;
  /** The bindings as the client sent them, each with its id (the join reply echoes them). */
  readonly bindings: Binding[];

  constructor(
    init: Omit<JoinedChannel, 'open' | 'canWrite' | 'subscriptions' | 'subscribeGeneration' | 'send' | 'claimsKey'>,
  ) {
    this.session = init.session;
    this.topic = init.topic;
    this.subTopic = init.subTopic;
    this.joinRef = init.joinRef;
    this.claims = init.claims;
    this.token = init.token;
    this.isPrivate = init.isPrivate;
    this.self = init.self;
    this.ack = init.ack;
    this.replicationReady = init.replicationReady;
    this.bindings = init.bindings;
  }

  #claimsKey: { claims: Claims; key: string } | undefined;

  /** The claims as one string: subscribers with equal claims share RLS lookups. Cached per claims object. */
  get claimsKey(): string {
    if (this.#claimsKey?.claims !== this.claims)
      this.#claimsKey = { claims: this.claims, key: JSON.stringify(this.claims) };
    return this.#claimsKey.key;
  }

  send(event: string, payload: Record<string, unknown>): void {
    if (this.open) this.session.sendShared(this.topic, event, payload);
  }
}

/** What a session needs from the server: authorization, audiences, the change feed's state. */
export interface SessionHost {
  jwtSecret: Uint8Array;
  limits: SessionLimits;
  canReadTopic(claims: Claims, subTopic: string): Promise<boolean>;
  canWriteTopic(claims: Claims, subTopic: string): Promise<boolean>;
  /** Who listens to what: sessions join, leave, subscribe and broadcast through it. */
  registry: ChannelRegistry;
  /** Whether the replication connection (Broadcast from Database) is up. */
  replicationConnected(): boolean;
  log(message: string): void;
}

/**
 * One client websocket speaking the Phoenix channel protocol as Supabase Realtime does:
 * heartbeats, phx_join/phx_leave, access_token refresh and client broadcasts. Its messages are
 * handled strictly one after another (as Phoenix' socket process does), so a leave never
 * overtakes its join and a second join of a topic replaces the first.
 */
export class SocketSession {
  readonly channels = new Map<string, JoinedChannel>();
  private readonly expiryTimers = new Map<string, NodeJS.Timeout>();
  private idleTimer: NodeJS.Timeout | undefined;
  private inbox: Promise<void> = Promise.resolve();
  private dead = false;
  private corked = false;
  private waiting = 0;
  private joins: number[] = [];
  private events = { second: 0, count: 0 };
  private readonly ws: WebSocket;
  readonly vsn: Vsn;
  private readonly apikeyClaims: Claims;
  private readonly host: SessionHost;

  constructor(ws: WebSocket, vsn: Vsn, apikeyClaims: Claims, host: SessionHost) {
    this.ws = ws;
    this.vsn = vsn;
    this.apikeyClaims = apikeyClaims;
    this.host = host;
    ws.on('message', (data, isBinary) => {
      this.touch();
      const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      const message = isBinary ? decodeBinary(bytes) : decode(this.vsn, bytes.toString('utf8'));
      if (!message) return;
      // A client sending faster than its messages are handled (joins wait on the database) is
      // cut off rather than queued for without limit.
      if (++this.waiting > MAX_WAITING_MESSAGES) {
        this.host.log(`realtime: closing a socket with ${this.waiting} messages waiting`);
        this.shutDown();
        ws.close(1008, 'too many messages waiting');
        return;
      }
      this.inbox = this.inbox
        .then(() => this.handle(message))
        .catch((err: unknown) => this.host.log(`realtime: ${String(err)}`))
        .finally(() => (this.waiting -= 1));
    });
    ws.on('close', () => this.shutDown());
    host.registry.on('resync', this.resync);
    this.touch();
  }

  /** Sends a frame unless the socket is gone; a socket that stopped reading is closed, not buffered for. */
  send(message: PhoenixMessage): void {
    this.write(() => encode(this.vsn, message));
  }

  /** A server push whose payload object many channels share (encoded once per topic and vsn). */
  sendShared(topic: string, event: string, payload: Record<string, unknown>): void {
    this.write(() => encodeShared(this.vsn, null, topic, event, payload));
  }

  private write(frame: () => string): void {
    if (this.dead || this.ws.readyState !== this.ws.OPEN) return;
    // Frames written in one tick go out in one write: a change fanned out to this socket's
    // channels, or a round of changes, is one syscall instead of one per frame. The buffer is
    // judged at a tick's first write, on what earlier ticks left unsent (what this tick adds is
    // bounded by the dispatcher's 10 ms slices).
    if (!this.corked) {
      if (this.ws.bufferedAmount > this.host.limits.maxBufferedBytes) {
        this.host.log(
          `realtime: closing a socket with ${this.ws.bufferedAmount} bytes unsent (the client reads too slowly)`,
        );
        this.shutDown();
        this.ws.close(1013, 'send buffer full: the client is not reading');
        setTimeout(() => this.ws.terminate(), CLOSE_GRACE_MS).unref();
        return;
      }
      const socket = (this.ws as unknown as { _socket?: { cork(): void; uncork(): void } })._socket;
      if (socket) {
        this.corked = true;
        socket.cork();
        process.nextTick(() => {
          this.corked = false;
          socket.uncork();
        });
      }
    }
    this.ws.send(frame());
  }

  private reply(request: PhoenixMessage, status: 'ok' | 'error', response: Record<string, unknown> | string): void {
    this.send({
      joinRef: request.joinRef,
      ref: request.ref,
      topic: request.topic,
      event: 'phx_reply',
      payload: { status, response },
    });
  }

  private touch(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.ws.close(1000, 'idle timeout'), IDLE_TIMEOUT_MS);
  }

  /** The socket is gone (or cut off): its channels leave every audience at once. */
  private shutDown(): void {
    if (this.dead) return;
    this.dead = true;
    this.host.registry.off('resync', this.resync);
    clearTimeout(this.idleTimer);
    for (const channel of [...this.channels.values()]) this.forget(channel);
  }

  private async handle(message: PhoenixMessage): Promise<void> {
    if (this.dead) return;
    if (message.topic === 'phoenix' && message.event === 'heartbeat') {
      this.reply(message, 'ok', {});
      return;
    }
    if (!this.countEvent(message)) return;
    switch (message.event) {
      case 'phx_join':
        await this.join(message);
        return;
      case 'phx_leave':
        this.leave(message);
        return;
      case 'access_token':
        await this.refreshToken(message);
        return;
      case 'broadcast':
        await this.clientBroadcast(message);
        return;
      default:
        if (!this.channels.has(message.topic)) this.reply(message, 'error', { reason: 'unmatched topic' });
    }
  }

  /**
   * Realtime's max_events_per_second, counted here per socket over the messages Realtime counts
   * from clients (broadcast pushes and unknown events; not joins, leaves, tokens or heartbeats).
   * Past it, the socket's channels are shut down with "Too many messages per second" (the client
   * sees CLOSED). Realtime counts per project over a minute; per socket and per second is
   * stricter for one client and never lets one client's burst close another's channels.
   */
  private countEvent(message: PhoenixMessage): boolean {
    if (['phx_join', 'phx_leave', 'access_token'].includes(message.event)) return true;
    const second = Math.floor(Date.now() / 1000);
    if (second !== this.events.second) this.events = { second, count: 0 };
    if (++this.events.count <= this.host.limits.maxEventsPerSecond) return true;
    for (const channel of [...this.channels.values()]) this.systemError(channel, 'Too many messages per second');
    return false;
  }

  private async join(message: PhoenixMessage): Promise<void> {
    const now = Date.now();
    this.joins = this.joins.filter((at) => now - at < 60_000);
    this.joins.push(now);
    if (this.joins.length > MAX_JOINS_PER_MINUTE) {
      // As Realtime: refused, then the socket is disconnected.
      this.reply(message, 'error', { reason: 'ClientJoinRateLimitReached: Too many joins per second' });
      this.shutDown();
      this.ws.close(1001, 'too many joins');
      return;
    }
    if (!message.topic.startsWith('realtime:')) {
      this.reply(message, 'error', { reason: 'unmatched topic' });
      return;
    }
    const subTopic = message.topic.slice('realtime:'.length);
    if (!subTopic) {
      this.reply(message, 'error', { reason: 'TopicNameRequired: You must provide a topic name' });
      return;
    }
    // A join for a topic already joined replaces the old channel (Phoenix closes it first).
    const previous = this.channels.get(message.topic);
    if (previous) this.close(previous);
    if (this.channels.size >= MAX_CHANNELS_PER_CLIENT) {
      this.reply(message, 'error', { reason: 'ChannelRateLimitReached: Too many channels' });
      return;
    }
    const config = record(message.payload['config']);
    const broadcast = record(config['broadcast']);
    const token =
      typeof message.payload['access_token'] === 'string' && !message.payload['access_token'].startsWith('sb_')
        ? message.payload['access_token']
        : undefined;
    let claims = this.apikeyClaims;
    if (token) {
      const verified = await verifyJwt(token, this.host.jwtSecret);
      if (this.dead) return;
      if (!verified.ok) {
        this.reply(message, 'error', { reason: `InvalidJWTToken: ${verified.message}` });
        return;
      }
      claims = verified.claims;
    }
    const isPrivate = config['private'] === true;
    if (isPrivate) {
      let allowed: boolean;
      try {
        allowed = await this.host.canReadTopic(claims, subTopic);
        // The socket closed while the check ran: no channel may be left behind it.
        if (this.dead) return;
      } catch (err) {
        if (this.dead) return;
        this.host.log(`realtime: authorization of ${subTopic} failed: ${String(err)}`);
        this.reply(message, 'error', { reason: 'Realtime was unable to connect to the project database' });
        return;
      }
      if (!allowed) {
        this.reply(message, 'error', {
          reason: `Unauthorized: You do not have permissions to read from this Channel topic: ${subTopic}`,
        });
        return;
      }
    }
    // The client may have left or re-joined while the checks ran: it is handled after this, in order.
    const requested = Array.isArray(config['postgres_changes']) ? config['postgres_changes'].map(record) : [];
    const channel = new JoinedChannel({
      session: this,
      topic: message.topic,
      subTopic,
      joinRef: message.joinRef ?? message.ref ?? '',
      claims,
      token,
      isPrivate,
      self: broadcast['self'] === true,
      ack: broadcast['ack'] === true,
      replicationReady: broadcast['replication_ready'] === true,
      bindings: requested.map((params) => ({ ...params, id: bindingId(params) }) as Binding),
    });
    this.channels.set(message.topic, channel);
    this.scheduleExpiry(channel);
    this.host.registry.join(channel);
    // As Realtime: the reply comes first; the change feed is subscribed after it and announced
    // with a `system` message, so clients must wait for that, not for SUBSCRIBED.
    this.reply(message, 'ok', { postgres_changes: channel.bindings });
    if (channel.bindings.length > 0) void this.subscribePostgresChanges(channel);
    if (channel.replicationReady) this.awaitReplication(channel);
  }

  /**
   * `config.broadcast.replication_ready`: as Realtime, checks every 500 ms whether the replication
   * connection is up and says so once; after a minute without it the channel is shut down.
   */
  private awaitReplication(channel: JoinedChannel): void {
    const started = Date.now();
    const check = () => {
      if (!channel.open) return;
      if (this.host.replicationConnected()) {
        this.announceReplicationReady(channel);
      } else if (Date.now() - started >= REPLICATION_READY_TIMEOUT_MS) {
        this.systemError(channel, 'Replication connection was not established in time');
      } else {
        setTimeout(check, REPLICATION_READY_CHECK_MS).unref();
      }
    };
    check();
  }

  /**
   * Subscribes (again) the channel's bindings and says how it went, as Realtime's system message.
   * A validation error is final (as Realtime: "no point in retrying"); an exception (the database
   * failed) is reported and retried every 5–10 s while the channel is open, as Realtime does.
   */
  async subscribePostgresChanges(channel: JoinedChannel): Promise<void> {
    let error: string | null;
    let retry = false;
    try {
      error = await this.host.registry.subscribe(channel);
    } catch (err) {
      this.host.log(`realtime: subscribing ${channel.subTopic} failed: ${String(err)}`);
      error = `{:error, ${JSON.stringify(err instanceof Error ? err.message : String(err))}}`;
      retry = true;
    }
    if (!channel.open) return;
    this.send({
      joinRef: channel.joinRef,
      ref: null,
      topic: channel.topic,
      event: 'system',
      payload:
        error === null
          ? {
              extension: 'postgres_changes',
              status: 'ok',
              message: 'Subscribed to PostgreSQL',
              channel: channel.subTopic,
            }
          : { extension: 'postgres_changes', status: 'error', message: error, channel: channel.subTopic },
    });
    if (retry) {
      setTimeout(
        () => {
          if (channel.open) void this.subscribePostgresChanges(channel);
        },
        5_000 + Math.random() * 5_000,
      ).unref();
    }
  }

  /**
   * Changes were lost: as Realtime re-subscribes a channel's feed, each feed is subscribed again
   * and announced with "Subscribed to PostgreSQL" (no phx_error, no new SUBSCRIBED). Channels that
   * asked for replication_ready get "Replication connection established" again — Realtime sends it
   * once per join, so on Supabase such a channel learns of nothing; here the stand-in says what it
   * knows. Nothing is replayed; pages reload on these messages.
   */
  private readonly resync = (): void => {
    for (const channel of [...this.channels.values()]) {
      if (channel.bindings.length > 0) void this.subscribePostgresChanges(channel);
      if (channel.replicationReady) this.announceReplicationReady(channel);
    }
  };

  /** Realtime's answer to `config.broadcast.replication_ready`. */
  announceReplicationReady(channel: JoinedChannel): void {
    if (!channel.open) return;
    this.send({
      joinRef: channel.joinRef,
      ref: null,
      topic: channel.topic,
      event: 'system',
      payload: {
        extension: 'system',
        status: 'ok',
        message: 'Replication connection established',
        channel: channel.subTopic,
      },
    });
  }

  private leave(message: PhoenixMessage): void {
    this.reply(message, 'ok', {});
    const channel = this.channels.get(message.topic);
    if (channel) this.close(channel);
  }

  private close(channel: JoinedChannel): void {
    this.forget(channel);
    this.send({
      joinRef: channel.joinRef,
      ref: channel.joinRef,
      topic: channel.topic,
      event: 'phx_close',
      payload: {},
    });
  }

  /**
   * A client broadcast: to the sender's audience only (same topic, same private flag). On a
   * private channel the sender's claims must pass Realtime Authorization's write check (an
   * INSERT policy on realtime.messages for the topic), made on the first broadcast and kept until
   * the token changes; as on Realtime, a refused one is dropped without a reply, even with `ack`
   * (the client's send() times out). Payloads over the size limit are dropped, and with `ack`
   * answered `payload_size_exceeded`.
   */
  private async clientBroadcast(message: PhoenixMessage): Promise<void> {
    const channel = this.channels.get(message.topic);
    if (!channel) return;
    if (channel.isPrivate) {
      channel.canWrite ??= this.host.canWriteTopic(channel.claims, channel.subTopic).catch((err: unknown) => {
        this.host.log(`realtime: write authorization of ${channel.subTopic} failed: ${String(err)}`);
        return false;
      });
      if (!(await channel.canWrite)) return;
    }
    if (Buffer.byteLength(JSON.stringify(message.payload)) > this.host.limits.maxPayloadBytes) {
      if (channel.ack) this.reply(message, 'error', 'payload_size_exceeded');
      return;
    }
    if (!channel.open) return;
    this.host.registry.broadcast(channel, message.payload);
    if (channel.ack) this.reply(message, 'ok', {});
  }

  /**
   * No reply (as Realtime); a token that no longer passes closes the channel with a system error.
   * As Realtime, the token the channel already has is ignored (clients resend it after joining).
   */
  private async refreshToken(message: PhoenixMessage): Promise<void> {
    const channel = this.channels.get(message.topic);
    const token = message.payload['access_token'];
    if (!channel || typeof token !== 'string' || token.startsWith('sb_') || token === channel.token) return;
    const verified = await verifyJwt(token, this.host.jwtSecret);
    if (this.dead || !channel.open) return;
    if (!verified.ok) {
      this.systemError(channel, verified.message);
      return;
    }
    let allowed: boolean;
    try {
      allowed = !channel.isPrivate || (await this.host.canReadTopic(verified.claims, channel.subTopic));
    } catch (err) {
      this.host.log(`realtime: authorization of ${channel.subTopic} failed: ${String(err)}`);
      allowed = false;
    }
    if (this.dead || !channel.open) return;
    if (!allowed) {
      this.systemError(channel, `You no longer have permission to read from this Channel topic: ${channel.subTopic}`);
      return;
    }
    channel.claims = verified.claims;
    channel.token = token;
    channel.canWrite = undefined;
    this.scheduleExpiry(channel);
    // Realtime re-subscribes postgres_changes with the new claims and says so again.
    if (channel.bindings.length > 0) await this.subscribePostgresChanges(channel);
  }

  /** Realtime closes a channel whose token expires (with a system error); the client must refresh before. */
  private scheduleExpiry(channel: JoinedChannel): void {
    clearTimeout(this.expiryTimers.get(channel.topic));
    const ms = channel.claims.exp * 1000 - Date.now();
    const timer = setTimeout(
      () => {
        if (this.channels.get(channel.topic) !== channel) return;
        // Timers are capped at ~24.8 days: a token that lasts longer is only checked again.
        if (channel.claims.exp * 1000 > Date.now()) {
          this.scheduleExpiry(channel);
          return;
        }
        this.systemError(
          channel,
          `Token has expired ${Math.max(0, Math.floor((Date.now() - channel.claims.exp * 1000) / 1000))} seconds ago`,
        );
      },
      Math.max(0, Math.min(ms, 2 ** 31 - 1)),
    );
    timer.unref();
    this.expiryTimers.set(channel.topic, timer);
  }

  private forget(channel: JoinedChannel): void {
    channel.open = false;
    if (this.channels.get(channel.topic) === channel) this.channels.delete(channel.topic);
    clearTimeout(this.expiryTimers.get(channel.topic));
    this.expiryTimers.delete(channel.topic);
    this.host.registry.leave(channel);
  }

  /** Realtime's shutdown_response: a `system` error, then `phx_close`. */
  systemError(channel: JoinedChannel, text: string): void {
    this.send({
      joinRef: channel.joinRef,
      ref: null,
      topic: channel.topic,
      event: 'system',
      payload: { extension: 'system', status: 'error', message: text, channel: channel.subTopic },
    });
    this.close(channel);
  }
}

function record(value: unknown): Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}
