import type { WebSocket } from 'ws';
import { bindingId } from './binding-id.ts';
import type { Binding } from './filters.ts';
import type { Claims } from './jwt.ts';
import { verifyJwt } from './jwt.ts';
import { decode, decodeBinary, encode, type PhoenixMessage, type Vsn } from './serializer.ts';

/** Realtime's default TENANT_MAX_CHANNELS_PER_CLIENT. */
export const MAX_CHANNELS_PER_CLIENT = 100;
/** Phoenix closes a websocket that sent nothing for this long (the client heartbeats every 25 s). */
const IDLE_TIMEOUT_MS = 60_000;

export interface JoinedChannel {
  topic: string;
  subTopic: string;
  joinRef: string;
  claims: Claims;
  isPrivate: boolean;
  /** Receive own broadcasts (config.broadcast.self). */
  self: boolean;
  postgresChanges: Binding[];
}

/** What a session needs from the server: authorization and the broadcast fan-out. */
export interface SessionHost {
  jwtSecret: Uint8Array;
  canReadTopic(claims: Claims, subTopic: string): Promise<boolean>;
  onJoin(session: SocketSession, channel: JoinedChannel): void;
  onLeave(session: SocketSession, channel: JoinedChannel): void;
  broadcast(from: SocketSession, topic: string, payload: Record<string, unknown>): void;
  log(message: string): void;
}

/**
 * One client websocket speaking the Phoenix channel protocol as Supabase Realtime does:
 * heartbeats, phx_join/phx_leave/phx_close, access_token refresh and client broadcasts.
 */
export class SocketSession {
  readonly channels = new Map<string, JoinedChannel>();
  private readonly expiryTimers = new Map<string, NodeJS.Timeout>();
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly ws: WebSocket;
  private readonly vsn: Vsn;
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
      if (message) void this.handle(message).catch((err: unknown) => this.host.log(`realtime: ${String(err)}`));
    });
    ws.on('close', () => {
      clearTimeout(this.idleTimer);
      for (const channel of [...this.channels.values()]) this.forget(channel);
    });
    this.touch();
  }

  send(message: PhoenixMessage): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(encode(this.vsn, message));
  }

  private reply(request: PhoenixMessage, status: 'ok' | 'error', response: Record<string, unknown>): void {
    this.send({ joinRef: request.joinRef, ref: request.ref, topic: request.topic, event: 'phx_reply', payload: { status, response } });
  }

  private touch(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.ws.close(1000, 'idle timeout'), IDLE_TIMEOUT_MS);
  }

  private async handle(message: PhoenixMessage): Promise<void> {
    if (message.topic === 'phoenix' && message.event === 'heartbeat') {
      this.reply(message, 'ok', {});
      return;
    }
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
      case 'broadcast': {
        const channel = this.channels.get(message.topic);
        if (channel) this.host.broadcast(this, channel.topic, message.payload);
        return;
      }
      default:
        if (!this.channels.has(message.topic)) this.reply(message, 'error', { reason: 'unmatched topic' });
    }
  }

  private async join(message: PhoenixMessage): Promise<void> {
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
    const config = (message.payload['config'] ?? {}) as Record<string, unknown>;
    const token = typeof message.payload['access_token'] === 'string' && !message.payload['access_token'].startsWith('sb_')
      ? message.payload['access_token'] : undefined;
    let claims = this.apikeyClaims;
    if (token) {
      const verified = await verifyJwt(token, this.host.jwtSecret);
      if (!verified.ok) {
        this.reply(message, 'error', { reason: `InvalidJWTToken: ${verified.message}` });
        return;
      }
      claims = verified.claims;
    }
    const isPrivate = config['private'] === true;
    if (isPrivate && !(await this.host.canReadTopic(claims, subTopic))) {
      this.reply(message, 'error', { reason: `Unauthorized: You do not have permissions to read from this Channel topic: ${subTopic}` });
      return;
    }
    const requested = Array.isArray(config['postgres_changes']) ? (config['postgres_changes'] as Record<string, unknown>[]) : [];
    const channel: JoinedChannel = {
      topic: message.topic,
      subTopic,
      joinRef: message.joinRef ?? message.ref ?? '',
      claims,
      isPrivate,
      self: (config['broadcast'] as { self?: unknown } | undefined)?.self === true,
      postgresChanges: requested.map((params) => ({ ...params, id: bindingId(params) }) as Binding),
    };
    this.channels.set(message.topic, channel);
    this.scheduleExpiry(channel);
    this.host.onJoin(this, channel);
    this.reply(message, 'ok', { postgres_changes: channel.postgresChanges });
    if (channel.postgresChanges.length > 0) {
      this.send({
        joinRef: channel.joinRef, ref: null, topic: channel.topic, event: 'system',
        payload: { extension: 'postgres_changes', status: 'ok', message: 'Subscribed to PostgreSQL', channel: subTopic },
      });
    }
  }

  private leave(message: PhoenixMessage): void {
    this.reply(message, 'ok', {});
    const channel = this.channels.get(message.topic);
    if (channel) this.close(channel);
  }

  private close(channel: JoinedChannel): void {
    this.forget(channel);
    this.send({ joinRef: channel.joinRef, ref: channel.joinRef, topic: channel.topic, event: 'phx_close', payload: {} });
  }

  /** No reply (as Realtime); a token that no longer passes closes the channel with a system error. */
  private async refreshToken(message: PhoenixMessage): Promise<void> {
    const channel = this.channels.get(message.topic);
    const token = message.payload['access_token'];
    if (!channel || typeof token !== 'string' || token.startsWith('sb_')) return;
    const verified = await verifyJwt(token, this.host.jwtSecret);
    if (!verified.ok) {
      this.systemError(channel, verified.message);
      return;
    }
    if (channel.isPrivate && !(await this.host.canReadTopic(verified.claims, channel.subTopic))) {
      this.systemError(channel, `You no longer have permission to read from this Channel topic: ${channel.subTopic}`);
      return;
    }
    channel.claims = verified.claims;
    this.scheduleExpiry(channel);
  }

  /** Realtime closes a channel whose token expires (with a system error); the client must refresh before. */
  private scheduleExpiry(channel: JoinedChannel): void {
    clearTimeout(this.expiryTimers.get(channel.topic));
    const ms = channel.claims.exp * 1000 - Date.now();
    const timer = setTimeout(() => {
      if (this.channels.get(channel.topic) !== channel) return;
      this.systemError(channel, `Token has expired ${Math.max(0, Math.floor((Date.now() - channel.claims.exp * 1000) / 1000))} seconds ago`);
    }, Math.max(0, Math.min(ms, 2 ** 31 - 1)));
    timer.unref();
    this.expiryTimers.set(channel.topic, timer);
  }

  /**
   * The channel process "crashed" (here: the change stream was lost): `phx_error` makes the client
   * mark the channel errored and rejoin with a new phx_join, as with Realtime. Nothing is replayed.
   */
  errorChannel(channel: JoinedChannel): void {
    if (this.channels.get(channel.topic) !== channel) return;
    this.forget(channel);
    this.send({ joinRef: channel.joinRef, ref: channel.joinRef, topic: channel.topic, event: 'phx_error', payload: {} });
  }

  private forget(channel: JoinedChannel): void {
    this.channels.delete(channel.topic);
    clearTimeout(this.expiryTimers.get(channel.topic));
    this.expiryTimers.delete(channel.topic);
    this.host.onLeave(this, channel);
  }

  private systemError(channel: JoinedChannel, text: string): void {
    this.send({
      joinRef: channel.joinRef, ref: null, topic: channel.topic, event: 'system',
      payload: { extension: 'system', status: 'error', message: text, channel: channel.subTopic },
    });
    this.close(channel);
  }
}
