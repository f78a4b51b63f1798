import { ReasonCodes, validateTopic, type MqttClient } from 'mqtt';

/** SUBACK and (MQTT 5) UNSUBACK codes from 0x80 up are refusals (MQTT 3.1.1 §3.9.3, MQTT 5 §3.9.3, §3.11.3). */
const REFUSED = 0x80;
/** MQTT 5 "Topic Filter invalid": what a broker would answer to a filter we do not even send. */
const INVALID_FILTER = 0x8f;

/** What one sync changed on the broker, for the connection log. */
export interface SubscriptionChange {
  /** Granted, and not held before as far as we know. */
  subscribed: string[];
  /** Granted again: filters the session may already have held (see `connected`). */
  renewed: string[];
  unsubscribed: string[];
  /** Refused by the broker (or invalid), with the reason code. */
  refused: { filter: string; code: number }[];
  /** MQTT 5: unsubscribes the broker refused, with the reason code. */
  keptByBroker: { filter: string; code: number }[];
}

/**
 * What one connection's broker session is subscribed to, and how it is made equal to the wanted
 * filters. The broker says on CONNACK whether it kept our session, never what the session holds,
 * and MQTT has no way to ask; so two sets are kept:
 *
 * - `possible`: every filter the session may hold, recorded in mqtt_connection.session_filters.
 *   A filter is added to the record *before* its SUBSCRIBE goes out and removed only after its
 *   UNSUBACK, so whatever happens in between (a crash after the SUBACK, before the next write) the
 *   record is a superset, and a filter no longer wanted is never forgotten at the broker.
 * - `confirmed`: filters a SUBACK granted on the current connection or, where renewing them would
 *   replay retained messages, on the current broker session; known only to this process. A wanted
 *   filter that is not confirmed (after an ingestor restart, after a reconnect, or when a SUBACK
 *   was lost with the connection) is subscribed again: re-subscribing an existing filter only
 *   replaces it, and with MQTT 5's Retain Handling 1 ("send retained messages only for a new
 *   subscription") the broker sends no retained messages again. MQTT 3.1.1 has no such option,
 *   so its brokers do resend them then; writes are idempotent, discovery counts them.
 *
 * One instance per connection outlives the clients of its sessions: a session restarted with
 * changed settings takes over the one of the session it replaces.
 */
export class BrokerSubscriptions {
  private readonly possible: Set<string>;
  private readonly confirmed = new Set<string>();
  /** Refused on this broker session; tried again after a new CONNACK or a change of the wanted filters. */
  private readonly refused = new Map<string, number>();
  private wantedKey = '';
  /** What the database holds, as `key()` of it. */
  private recorded: string;
  /** Database writes, one after the other; each writes the state of the moment it runs. */
  private writes: Promise<void> = Promise.resolve();
  private readonly record: (filters: string[]) => Promise<void>;

  /**
   * @param recorded the connection's session_filters as loaded
   * @param record writes session_filters; rejects when the database is unreachable
   */
  constructor(recorded: readonly string[], record: (filters: string[]) => Promise<void>) {
    this.possible = new Set(recorded);
    this.recorded = key(recorded);
    this.record = record;
  }

  /** Filters the broker session may hold (what session_filters says once written). */
  get held(): string[] {
    return [...this.possible].sort();
  }

  /**
   * The same subscriptions for a new client (a session restarted with changed settings): it may
   * reach another broker, so what was confirmed is only possible from now on.
   */
  forNewClient(): this {
    this.confirmed.clear();
    return this;
  }

  /**
   * A CONNACK: without a session the broker holds none of our subscriptions any more. With one,
   * "session present" still does not prove that every subscription survived — Mosquitto 2.0.11
   * restores a persisted session without its shared subscriptions — so what can be renewed
   * without a replay of retained messages is renewed on every connect: everything with MQTT 5
   * (Retain Handling 1), the `$share/` filters with MQTT 3.1.1 (a lost shared subscription loses
   * data; Mosquitto's replay of retained messages to it only repeats idempotent writes).
   */
  connected(sessionPresent: boolean, protocolVersion: 4 | 5): void {
    this.refused.clear();
    if (!sessionPresent) {
      this.possible.clear();
      this.confirmed.clear();
      return;
    }
    for (const filter of this.confirmed) {
      if (protocolVersion === 5 || filter.startsWith('$share/')) this.confirmed.delete(filter);
    }
  }

  /** Whether `sync(wanted)` has anything to do, on the broker or in the database. */
  needsSync(wanted: readonly string[]): boolean {
    const { subscribe, unsubscribe } = this.plan(wanted);
    return subscribe.length > 0 || unsubscribe.length > 0 || key(this.possible) !== this.recorded;
  }

  /**
   * Subscribes the wanted filters the session lacks (QoS 1) and unsubscribes the ones it may hold
   * and should not; null when there was nothing to change at the broker. Rejects when the
   * connection goes away mid-way (the next CONNACK syncs again) or when the record that must
   * precede a SUBSCRIBE cannot be written; a failure of the final write only leaves the record a
   * superset, which `needsSync` reports until a later sync writes it.
   */
  async sync(
    client: MqttClient,
    wanted: readonly string[],
    protocolVersion: 4 | 5,
  ): Promise<SubscriptionChange | null> {
    const { subscribe, unsubscribe } = this.plan(wanted);
    const change: SubscriptionChange = { subscribed: [], renewed: [], unsubscribed: [], refused: [], keptByBroker: [] };
    const valid = subscribe.filter((filter) => validateTopic(filter));
    for (const filter of subscribe) {
      if (valid.includes(filter)) continue;
      this.refused.set(filter, INVALID_FILTER);
      change.refused.push({ filter, code: INVALID_FILTER });
    }
    if (valid.length > 0) {
      const before = new Set(this.possible);
      for (const filter of valid) this.possible.add(filter);
      await this.persist();
      // Subscribed before unsubscribing: a filter that replaces another (a new share group) then
      // overlaps it for a moment instead of leaving a gap in which messages would be missed.
      const codes = await subscribeWithCodes(client, valid, protocolVersion);
      valid.forEach((filter, i) => {
        const code = codes[i] ?? REFUSED;
        if (code < REFUSED) {
          this.confirmed.add(filter);
          (before.has(filter) ? change.renewed : change.subscribed).push(filter);
          return;
        }
        this.refused.set(filter, code);
        change.refused.push({ filter, code });
        // Not granted, so not held — unless it may have been held before (a broker refusing to
        // renew a subscription need not drop it).
        if (!before.has(filter)) this.possible.delete(filter);
      });
    }
    if (unsubscribe.length > 0) {
      const codes = await unsubscribeWithCodes(client, unsubscribe);
      unsubscribe.forEach((filter, i) => {
        // 0x11 "No subscription existed" is as good as success: the session does not hold it.
        const code = codes[i] ?? 0;
        if (code < REFUSED) {
          this.possible.delete(filter);
          this.confirmed.delete(filter);
          change.unsubscribed.push(filter);
          return;
        }
        this.refused.set(filter, code);
        change.keptByBroker.push({ filter, code });
      });
    }
    await this.persist().catch(() => undefined);
    return subscribe.length > 0 || unsubscribe.length > 0 ? change : null;
  }

  private plan(wanted: readonly string[]): { subscribe: string[]; unsubscribe: string[] } {
    const wantedKey = key(wanted);
    if (wantedKey !== this.wantedKey) {
      // Changed filters are a new attempt, refused ones included (an ACL may have been fixed).
      this.refused.clear();
      this.wantedKey = wantedKey;
    }
    const wantedSet = new Set(wanted);
    return {
      subscribe: [...wantedSet].filter((f) => !this.confirmed.has(f) && !this.refused.has(f)),
      unsubscribe: [...this.possible].filter((f) => !wantedSet.has(f) && !this.refused.has(f)),
    };
  }

  /** Writes `possible` unless the database already holds it; writes never overlap or reorder. */
  private persist(): Promise<void> {
    const run = this.writes.then(async () => {
      const filters = this.held;
      const next = key(filters);
      if (next === this.recorded) return;
      await this.record(filters);
      this.recorded = next;
    });
    this.writes = run.catch(() => undefined);
    return run;
  }
}

/** "filter (0x87 Not authorized)" */
export function describeCode({ filter, code }: { filter: string; code: number }): string {
  const reason = (ReasonCodes as Record<number, string | undefined>)[code];
  return `${filter} (0x${code.toString(16)}${reason ? ` ${reason}` : ''})`;
}

function key(filters: Iterable<string>): string {
  return JSON.stringify([...filters].sort());
}

/**
 * SUBSCRIBE, resolving with the SUBACK's code per filter. MQTT.js reports a SUBACK with a refusal
 * as an error that carries the packet; refusals are answers here, so only a missing SUBACK (the
 * connection closed, the client is ending) rejects.
 */
function subscribeWithCodes(client: MqttClient, filters: string[], protocolVersion: 4 | 5): Promise<number[]> {
  const options = protocolVersion === 5 ? { qos: 1 as const, rh: 1 } : { qos: 1 as const };
  return new Promise((resolve, reject) => {
    client.subscribe(filters, options, (err, _granted, packet) => {
      if (packet) resolve(packet.granted.map((code) => (typeof code === 'number' ? code : REFUSED)));
      else reject(err ?? new Error('SUBSCRIBE got no SUBACK'));
    });
  });
}

/** UNSUBSCRIBE, resolving with the UNSUBACK's code per filter (MQTT 3.1.1 has none: all 0). */
function unsubscribeWithCodes(client: MqttClient, filters: string[]): Promise<number[]> {
  return new Promise((resolve, reject) => {
    client.unsubscribe(filters, {}, (err, packet) => {
      if (err) reject(err);
      else resolve(packet && 'granted' in packet && Array.isArray(packet.granted) ? (packet.granted as number[]) : []);
    });
  });
}
