import mqtt, { type IPublishPacket, type MqttClient } from 'mqtt';
import { backoffDelay } from './backoff.ts';
import type { BatchWriter, WriteDone } from './batch-writer.ts';
import { clientOptions, describeBroker, settingsFingerprint, subscriptionFilters } from './broker-options.ts';
import { describeCode, type BrokerSubscriptions, type SubscriptionChange } from './broker-subscriptions.ts';
import { CoalescingRunner } from './coalescing-runner.ts';
import type { DiscoveryAggregator } from './discovery.ts';
import { coerceError } from './errors.ts';
import type { ObservedConnection } from './health.ts';
import { LeaseLostError, leaseKey, type SessionLease } from './leases.ts';
import type { ConnectionStatus, LogLevel } from './vocabulary.ts';
import type { Logger } from './logger.ts';
import { processMessage, type ConnectionContext } from './message-pipeline.ts';
import type { IngestorMetrics } from './metrics.ts';
import type { ParserRegistry } from './parsers/registry.ts';
import type { ConnectionRow } from './sql/connections.ts';
import type { StatusReporter } from './status-reporter.ts';
import { TopicMatcher, type TopicPattern } from './topic-matcher.ts';

export interface SessionDeps {
  writer: BatchWriter;
  discovery: DiscoveryAggregator;
  reporter: StatusReporter;
  registry: ParserRegistry;
  logger: Logger;
  metrics: Pick<IngestorMetrics, 'messageProcessed' | 'connectionStatus' | 'reconnectAttempt'>;
  options: { maxPayloadBytes: number; archiveUnmatched: boolean; reconnectMaxMs: number; receiveMaximum: number };
}

/**
 * Handed to MQTT.js' handleMessage callback so that it moves on to the next packet without
 * sending this one's PUBACK. MQTT.js handles one packet at a time and acknowledges a QoS 1 message
 * only from that callback (handlers/publish.ts, client.ts `work`); acknowledging after commit with
 * it would allow one message per database round trip. Instead the session lets MQTT.js continue at
 * once and sends the PUBACKs itself, in the order received, when the batch holding them commits.
 */
const DEFERRED_ACK = new Error('PUBACK deferred until the rows are committed');

/** How long a stopping session waits for MQTT.js to end cleanly before closing the socket. */
const STOP_GRACE_MS = 1_000;

interface AckTicket {
  messageId: number;
  state: 'pending' | 'committed' | 'failed';
}

/** How long a session handed over to another instance may take to write and acknowledge what it holds. */
const DRAIN_MS = 5_000;

/**
 * One broker connection: an MQTT.js client, its subscriptions (kept equal to the row's filters,
 * see BrokerSubscriptions), the deferred acknowledgements of its QoS 1 messages, and its own
 * reconnect loop (capped exponential backoff with jitter).
 *
 * It runs under a lease (leases.ts). While the lease is not valid by this instance's clock — the
 * process was paused, or renewals fail — it reads nothing more from the broker, sends no PUBACK and
 * does not reconnect until a renewal says the lease is still its own; every batch it submits is
 * fenced by the lease's epoch in the write transaction as well. When the lease turns out lost,
 * `fence()` closes the client without acknowledging anything more, and the broker gives the
 * unacknowledged messages to the new owner. The session never reconnects without a lease
 * confirmed valid, so two instances never take the broker session (same client id) from each
 * other in turn.
 */
export class BrokerSession {
  readonly fingerprint: string;
  private client: MqttClient | undefined;
  private context: ConnectionContext;
  private attempt = 0;
  private everConnected = false;
  private connected = false;
  private stopping = false;
  private paused = false;
  private fenced = false;
  private lastError: string | null = null;
  /** The status last reported, and since when the session is not connected (unset while it is). */
  private status: ConnectionStatus = 'connecting';
  private statusDetail: string | null = null;
  private notConnectedSince: Date | undefined = new Date();
  private retryTimer: NodeJS.Timeout | undefined;
  /** Subscription syncs run one at a time; requests meanwhile merge into one more run. */
  private readonly syncs = new CoalescingRunner(() => this.syncOnce());
  private syncAttempt = 0;
  private syncTimer: NodeJS.Timeout | undefined;
  /** Bumped on every disconnect: acknowledgements of an older connection are never sent. */
  private generation = 0;
  /** QoS 1 messages awaiting their PUBACK, oldest first from `ackHead` (a shift() per ack is O(n)). */
  private acks: AckTicket[] = [];
  private ackHead = 0;
  private acksScheduled = false;
  private readonly log: Logger;
  private currentRow: ConnectionRow;
  private readonly deps: SessionDeps;
  readonly subscriptions: BrokerSubscriptions;
  readonly lease: SessionLease;

  /**
   * @param row the connection row; for a member session of a shared connection (slot > 0) its own
   *   client id and session_filters (see Supervisor)
   */
  constructor(
    row: ConnectionRow,
    patterns: readonly TopicPattern[],
    deps: SessionDeps,
    subscriptions: BrokerSubscriptions,
    lease: SessionLease,
  ) {
    this.currentRow = row;
    this.deps = deps;
    this.subscriptions = subscriptions;
    this.lease = lease;
    this.fingerprint = settingsFingerprint(row);
    this.context = {
      connectionId: row.id,
      siteId: row.siteId,
      siteSlug: row.siteSlug,
      matcher: new TopicMatcher(patterns),
    };
    this.log = deps.logger.child({
      connectionId: row.id,
      ...(lease.token.slot > 0 && { member: lease.token.slot }),
      broker: describeBroker(row),
    });
  }

  get id(): string {
    return this.row.id;
  }

  /** The lease's key: connection id and member slot (0 unless a member of a shared connection). */
  get key(): string {
    return leaseKey(this.row.id, this.lease.token.slot);
  }

  /** What this process knows of the connection right now (for /healthz). */
  get observed(): ObservedConnection {
    return {
      id: this.row.id,
      site: this.row.siteSlug,
      status: this.status,
      detail: this.statusDetail,
      notConnectedSince: this.notConnectedSince,
    };
  }

  /** The row this session follows; its filters may change without a restart (`update`). */
  get row(): ConnectionRow {
    return this.currentRow;
  }

  start(): void {
    this.report('connecting', `connecting to ${describeBroker(this.row)}`, 'connect', 'info');
    const client = mqtt.connect(clientOptions(this.row, this.deps.options.receiveMaximum));
    this.client = client;
    client.handleMessage = (packet, callback) => this.onMessage(packet, callback);
    client.on('connect', (connack) => this.onConnect(connack.sessionPresent));
    client.on('error', (err) => {
      this.lastError = describeError(err);
    });
    // MQTT 5: the broker says why it ends the connection (0x8E: another client took the session).
    client.on('disconnect', (packet) => {
      const code = packet.reasonCode;
      if (code !== undefined && code !== 0)
        this.lastError = `the broker ended the connection${describeCode({ filter: '', code })}`;
    });
    client.on('close', () => this.onClose());
  }

  /**
   * Follows a row whose settings fingerprint is unchanged: new topic patterns are swapped in, and
   * changed filters or share group are subscribed and unsubscribed on the live client.
   */
  update(row: ConnectionRow, patterns: readonly TopicPattern[]): void {
    this.currentRow = row;
    if (this.connected && this.subscriptions.needsSync(subscriptionFilters(row))) this.requestSync();
    if (this.context.matcher.sameAs(patterns)) return;
    this.context = { ...this.context, matcher: new TopicMatcher(patterns) };
    this.log.info({ patterns: patterns.length }, 'topic patterns updated');
  }

  /** Stops taking messages: MQTT.js reads nothing more until the session ends. */
  pause(): void {
    this.paused = true;
  }

  /**
   * Before a hand-over: stops taking messages and waits (at most DRAIN_MS) until what was taken
   * is written and acknowledged, so that the next owner gets only what was never committed.
   */
  async drain(): Promise<void> {
    this.pause();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.deps.writer.flush().catch(() => undefined),
      new Promise((resolve) => {
        timer = setTimeout(resolve, DRAIN_MS);
      }),
    ]);
    clearTimeout(timer);
  }

  /**
   * The lease is lost: another instance owns the connection now. Nothing more is read, written or
   * acknowledged; the socket is closed at once (no DISCONNECT handshake to wait for), so the broker
   * keeps every unacknowledged message for the session the new owner resumes.
   */
  async fence(reason: string): Promise<void> {
    if (this.fenced) return;
    const unacknowledged = this.acks.length - this.ackHead;
    this.fenced = true;
    this.paused = true;
    this.stopping = true;
    this.generation += 1;
    this.acks = [];
    this.ackHead = 0;
    clearTimeout(this.retryTimer);
    clearTimeout(this.syncTimer);
    const client = this.client;
    if (client) {
      client.removeAllListeners('close');
      await client.endAsync(true).catch(() => undefined);
    }
    this.report(
      'disconnected',
      `${reason}; closed without acknowledging ${unacknowledged} message(s), which the broker keeps for the new owner`,
      'disconnect',
      'warn',
    );
  }

  /** Ends the client (after the PUBACKs of committed messages went out). */
  async stop(detail: string, report = true): Promise<void> {
    if (this.fenced) return;
    this.stopping = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.syncTimer);
    const client = this.client;
    if (client) {
      client.removeAllListeners('close');
      // A clean DISCONNECT lets the broker keep our session as it is. MQTT.js waits for packets it
      // is still working on, and a paused session never finishes its last one, so the graceful end
      // gets a short deadline before the socket is simply closed (the broker then redelivers
      // whatever was not acknowledged; writes are idempotent).
      const graceful = this.connected
        ? client.endAsync(false).then(
            () => true,
            () => false,
          )
        : Promise.resolve(false);
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), STOP_GRACE_MS);
      });
      const ended = await Promise.race([graceful, deadline]);
      clearTimeout(timer);
      if (!ended) await client.endAsync(true).catch(() => undefined);
    }
    if (report) this.report('disconnected', detail, 'disconnect', 'info');
  }

  private onConnect(sessionPresent: boolean): void {
    this.connected = true;
    this.attempt = 0;
    this.lastError = null;
    const wasConnected = this.everConnected;
    this.everConnected = true;
    this.report(
      'connected',
      sessionPresent ? 'connected; the broker kept our session' : 'connected',
      wasConnected ? 'reconnect' : 'connect',
      'info',
    );
    // Every connect: a kept session may still lack filters added, or hold filters removed, while
    // we were away (or before this process started); a new one holds nothing yet.
    this.subscriptions.connected(sessionPresent, this.row.protocolVersion);
    this.syncAttempt = 0;
    this.requestSync();
  }

  private requestSync(): void {
    clearTimeout(this.syncTimer);
    void this.syncs.run();
  }

  private async syncOnce(): Promise<void> {
    const client = this.client;
    if (!client || !this.connected || this.stopping) return;
    // Subscribing needs the lease: a paused instance must not change a session that may be another's now.
    if (!(await this.lease.confirm()) || !this.connected || this.stopping) return;
    const wanted = subscriptionFilters(this.row);
    try {
      // QoS 1 at most: MQTT.js acknowledges QoS 2 differently, and readings are idempotent anyway.
      const change = await this.subscriptions.sync(client, wanted, this.row.protocolVersion);
      if (change) this.reportChange(change);
      if (!this.subscriptions.needsSync(wanted)) {
        this.syncAttempt = 0;
        return;
      }
    } catch (err) {
      // The connection went away: its next CONNACK syncs again.
      if (!this.connected || this.stopping) return;
      if (err instanceof LeaseLostError) {
        this.lease.lost(err.message);
        return;
      }
      this.log.warn({ err: coerceError(err) }, 'could not update the subscriptions (is the database reachable?)');
    }
    // The database refused the record a SUBSCRIBE must wait for, or the last write: try again.
    const delay = backoffDelay(this.syncAttempt++, { maxMs: this.deps.options.reconnectMaxMs });
    this.syncTimer = setTimeout(() => this.requestSync(), delay);
  }

  /** A row in the connection log for every change; renewals alone (every reconnect) only in the debug log. */
  private reportChange(change: SubscriptionChange): void {
    const { subscribed, renewed, unsubscribed, refused, keptByBroker } = change;
    if (subscribed.length + unsubscribed.length + refused.length + keptByBroker.length === 0) {
      this.log.debug({ renewed }, 'subscriptions renewed');
      return;
    }
    const parts = [];
    if (subscribed.length > 0) parts.push(`subscribed to ${subscribed.join(', ')}`);
    if (unsubscribed.length > 0) parts.push(`unsubscribed from ${unsubscribed.join(', ')}`);
    if (renewed.length > 0) parts.push(`renewed ${renewed.join(', ')}`);
    if (refused.length > 0) parts.push(`the broker refused ${refused.map(describeCode).join(', ')}`);
    if (keptByBroker.length > 0)
      parts.push(`the broker refused to unsubscribe ${keptByBroker.map(describeCode).join(', ')}`);
    const failed = refused.length > 0 || keptByBroker.length > 0;
    this.report('connected', parts.join('; '), 'subscribe', failed ? 'warn' : 'info');
  }

  private onClose(): void {
    const wasConnected = this.connected;
    this.connected = false;
    this.generation += 1;
    this.acks = [];
    this.ackHead = 0;
    if (this.stopping) return;
    const delay = backoffDelay(this.attempt++, { maxMs: this.deps.options.reconnectMaxMs });
    const reason = this.lastError ?? 'connection closed';
    if (wasConnected)
      this.report('reconnecting', `connection lost (${reason}); reconnecting in ${delay} ms`, 'disconnect', 'warn');
    else this.report('error', `${reason}; retrying in ${delay} ms`, 'error', 'error');
    this.retryTimer = setTimeout(() => {
      if (this.stopping) return;
      // Only under a lease known to be ours: after a pause, another instance may have taken the
      // connection (and the broker session with it); taking it back would start a fight.
      void this.lease.confirm().then((held) => {
        if (!held || this.stopping) return;
        this.report(
          this.everConnected ? 'reconnecting' : 'connecting',
          `reconnecting (attempt ${this.attempt + 1})`,
          'reconnect',
          'info',
        );
        this.deps.metrics.reconnectAttempt(this.row.id);
        this.client?.reconnect();
      });
    }, delay);
  }

  private onMessage(packet: IPublishPacket, callback: (err?: Error) => void): void {
    if (this.fenced) return;
    if (!this.lease.valid()) {
      // Paused past the lease, or renewals failing: hold this message (MQTT.js reads no further
      // until the callback) until the lease is confirmed; if it is lost, fence() ends the client.
      void this.lease.confirm().then((held) => {
        if (held && !this.fenced) this.onMessage(packet, callback);
      });
      return;
    }
    const receivedAt = new Date();
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    const processed = processMessage(
      this.context,
      { topic: packet.topic, payload, qos: packet.qos, retained: packet.retain, receivedAt },
      this.deps.registry,
      this.deps.options,
    );
    this.deps.metrics.messageProcessed(processed);
    this.deps.discovery.record(processed);
    this.deps.reporter.touch(this.row.id, receivedAt);

    if (packet.qos === 0 || packet.messageId === undefined) {
      this.deps.writer.enqueue(processed, this.lease.token);
      this.admit(() => callback());
      return;
    }
    const ticket: AckTicket = { messageId: packet.messageId, state: 'pending' };
    this.acks.push(ticket);
    this.deps.writer.enqueue(processed, this.lease.token, this.ackWhenDone(ticket));
    this.admit(() => callback(DEFERRED_ACK));
  }

  /**
   * The writer's callback for a QoS 1 message. Made here, not in onMessage: a closure keeps its
   * function's whole scope alive, and onMessage's holds the packet (whose payload is a view of the
   * socket's 64 KiB read buffer) and MQTT.js's callback — for as long as the message waits.
   */
  private ackWhenDone(ticket: AckTicket): WriteDone {
    const generation = this.generation;
    return (err) => {
      // Not committed: no PUBACK, so the broker delivers it again after a reconnect (or to the
      // instance that took the connection over).
      ticket.state = err ? 'failed' : 'committed';
      if (err instanceof LeaseLostError) this.lease.lost(err.message);
      if (generation === this.generation) this.scheduleAcks();
    };
  }

  /** The messages of a batch are done one after the other: their PUBACKs go out together, once. */
  private scheduleAcks(): void {
    if (this.acksScheduled) return;
    this.acksScheduled = true;
    queueMicrotask(() => {
      this.acksScheduled = false;
      this.sendAcks(this.generation);
    });
  }

  /** Hands MQTT.js its callback (= read the next packet) only while the writer and discovery have room. */
  private admit(next: () => void): void {
    if (this.paused) return;
    const { writer, discovery } = this.deps;
    if (writer.hasRoom() && discovery.hasRoom()) {
      next();
      return;
    }
    void Promise.all([writer.waitForRoom(), discovery.waitForRoom()]).then(() => this.admit(next));
  }

  /** PUBACKs go out in the order the messages arrived (MQTT 3.1.1 §4.6), once committed. */
  private sendAcks(generation: number): void {
    if (generation !== this.generation || !this.client || this.fenced) return;
    if (!this.lease.valid()) {
      void this.lease.confirm().then((held) => {
        if (held) this.sendAcks(generation);
      });
      return;
    }
    const from = this.ackHead;
    let committed = 0;
    while (this.ackHead < this.acks.length && this.acks[this.ackHead]!.state !== 'pending') {
      if (this.acks[this.ackHead++]!.state === 'committed') committed += 1;
    }
    if (committed > 0) this.writePubacks(from, this.ackHead, committed);
    // Drop the acknowledged prefix now and then, not on every ack.
    if (this.ackHead > 1024 && this.ackHead * 2 > this.acks.length) {
      this.acks = this.acks.slice(this.ackHead);
      this.ackHead = 0;
    }
  }

  /**
   * The PUBACKs of acks[from, to) that committed, as one write to the socket: a batch's commit
   * releases thousands at once, and MQTT.js would build, cork and write each packet in pieces of
   * its own (about 5 % of the ingestor's CPU at full rate). A PUBACK with reason Success and no
   * properties is the same 4 bytes in MQTT 3.1.1 and 5 (§3.4): type 4, remaining length 2, the id.
   */
  private writePubacks(from: number, to: number, committed: number): void {
    const stream = this.client?.stream;
    if (!stream || stream.destroyed || !stream.writable) return;
    const packets = Buffer.allocUnsafe(committed * 4);
    let at = 0;
    for (let i = from; i < to; i++) {
      const ticket = this.acks[i]!;
      if (ticket.state !== 'committed') continue;
      packets[at] = 0x40;
      packets[at + 1] = 2;
      packets.writeUInt16BE(ticket.messageId, at + 2);
      at += 4;
    }
    stream.write(packets);
  }

  private report(
    status: ConnectionStatus,
    detail: string,
    event: Parameters<StatusReporter['report']>[0]['event'],
    level: LogLevel,
  ): void {
    if (status === 'connected') this.notConnectedSince = undefined;
    else this.notConnectedSince ??= new Date();
    this.status = status;
    this.statusDetail = detail;
    const { slot, epoch } = this.lease.token;
    // The connection's gauge follows its own session, not its members'.
    if (slot === 0) this.deps.metrics.connectionStatus(this.row.id, this.row.siteSlug, status);
    this.log[level]({ status, event }, detail);
    this.deps.reporter.report({
      connectionId: this.row.id,
      slot,
      epoch,
      status,
      detail: slot === 0 ? detail : `member ${slot}: ${detail}`,
      event,
      level,
    });
  }
}

/** A one-line reason for status_detail: the broker's refusal, or the socket error. */
function describeError(err: unknown): string {
  const error = coerceError(err);
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && !error.message.includes(code) ? `${error.message} (${code})` : error.message;
}
