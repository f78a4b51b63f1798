import mqtt, { type IPublishPacket, type MqttClient } from 'mqtt';
import { backoffDelay } from './backoff.ts';
import type { BatchWriter } from './batch-writer.ts';
import { clientOptions, describeBroker, settingsFingerprint, subscriptionFilters } from './broker-options.ts';
import { describeCode, type BrokerSubscriptions, type SubscriptionChange } from './broker-subscriptions.ts';
import { CoalescingRunner } from './coalescing-runner.ts';
import type { DiscoveryAggregator } from './discovery.ts';
import { coerceError } from './errors.ts';
import type { ObservedConnection } from './health.ts';
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

type PubackSender = { _sendPacket(packet: { cmd: 'puback'; messageId: number }, cb?: () => void): void };

interface AckTicket {
  messageId: number;
  state: 'pending' | 'committed' | 'failed';
}

/**
 * One broker connection: an MQTT.js client, its subscriptions (kept equal to the row's filters,
 * see BrokerSubscriptions), the deferred acknowledgements of its QoS 1 messages, and its own
 * reconnect loop (capped exponential backoff with jitter).
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
  private readonly log: Logger;
  private currentRow: ConnectionRow;
  private readonly deps: SessionDeps;
  readonly subscriptions: BrokerSubscriptions;

  constructor(
    row: ConnectionRow,
    patterns: readonly TopicPattern[],
    deps: SessionDeps,
    subscriptions: BrokerSubscriptions,
  ) {
    this.currentRow = row;
    this.deps = deps;
    this.subscriptions = subscriptions;
    this.fingerprint = settingsFingerprint(row);
    this.context = {
      connectionId: row.id,
      siteId: row.siteId,
      siteSlug: row.siteSlug,
      matcher: new TopicMatcher(patterns),
    };
    this.log = deps.logger.child({ connectionId: row.id, broker: describeBroker(row) });
  }

  get id(): string {
    return this.row.id;
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

  /** Ends the client (after the PUBACKs of committed messages went out). */
  async stop(detail: string, report = true): Promise<void> {
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
      this.report(
        this.everConnected ? 'reconnecting' : 'connecting',
        `reconnecting (attempt ${this.attempt + 1})`,
        'reconnect',
        'info',
      );
      this.deps.metrics.reconnectAttempt(this.row.id);
      this.client?.reconnect();
    }, delay);
  }

  private onMessage(packet: IPublishPacket, callback: (err?: Error) => void): void {
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
    const committed = this.deps.writer.submit(processed);

    if (packet.qos === 0 || packet.messageId === undefined) {
      committed.catch(() => undefined);
      this.admit(() => callback());
      return;
    }
    const ticket: AckTicket = { messageId: packet.messageId, state: 'pending' };
    const generation = this.generation;
    this.acks.push(ticket);
    committed.then(
      () => {
        ticket.state = 'committed';
        this.sendAcks(generation);
      },
      () => {
        // Not committed: no PUBACK, so the broker delivers it again after a reconnect.
        ticket.state = 'failed';
        this.sendAcks(generation);
      },
    );
    this.admit(() => callback(DEFERRED_ACK));
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
    if (generation !== this.generation || !this.client) return;
    const sender = this.client as unknown as PubackSender;
    while (this.ackHead < this.acks.length && this.acks[this.ackHead]!.state !== 'pending') {
      const ticket = this.acks[this.ackHead++]!;
      if (ticket.state === 'committed') sender._sendPacket({ cmd: 'puback', messageId: ticket.messageId });
    }
    // Drop the acknowledged prefix now and then, not on every ack.
    if (this.ackHead > 1024 && this.ackHead * 2 > this.acks.length) {
      this.acks = this.acks.slice(this.ackHead);
      this.ackHead = 0;
    }
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
    this.deps.metrics.connectionStatus(this.row.id, this.row.siteSlug, status);
    this.log[level]({ status, event }, detail);
    this.deps.reporter.report({ connectionId: this.row.id, status, detail, event, level });
  }
}

/** A one-line reason for status_detail: the broker's refusal, or the socket error. */
function describeError(err: unknown): string {
  const error = coerceError(err);
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && !error.message.includes(code) ? `${error.message} (${code})` : error.message;
}
