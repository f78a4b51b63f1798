import { EventEmitter } from 'node:events';
import type { Sql } from 'postgres';
import type { Subscriber } from './dispatcher.ts';
import type { JoinedChannel } from './socket-session.ts';
import { SubscriptionIndex, type Subscription } from './subscriptions.ts';

export interface RegistryEvents {
  /**
   * Changes were lost (the replication stream was re-made, or a round could not be dispatched):
   * each session tells its channels the way their pages reload.
   */
  resync: [reason: string];
}

/** Private and public channels of one topic name are separate audiences. */
const audienceKey = (topic: string, isPrivate: boolean) => `${isPrivate ? 'private' : 'public'}\u0000${topic}`;

/**
 * The one home of who listens to what: the joined channels by audience (topic and private flag)
 * and their postgres_changes subscriptions. Sessions call it to join, leave, subscribe and
 * broadcast; the dispatcher reads it for fan-out. It never calls into a session: frames go
 * through each channel's `send`, and a resync is an event the sessions listen to.
 */
export class ChannelRegistry extends EventEmitter<RegistryEvents> {
  private readonly audiences = new Map<string, Set<JoinedChannel>>();
  readonly subscriptions: SubscriptionIndex<Subscriber>;

  constructor(sql: Sql) {
    super();
    // One listener per socket session.
    this.setMaxListeners(0);
    this.subscriptions = new SubscriptionIndex<Subscriber>(sql);
  }

  /** The channels joined on a topic, in one audience. */
  audience(topic: string, isPrivate: boolean): Iterable<JoinedChannel> {
    return this.audiences.get(audienceKey(topic, isPrivate)) ?? [];
  }

  join(channel: JoinedChannel): void {
    const key = audienceKey(channel.topic, channel.isPrivate);
    const set = this.audiences.get(key) ?? new Set();
    set.add(channel);
    this.audiences.set(key, set);
  }

  leave(channel: JoinedChannel): void {
    this.subscriptions.unsubscribe(channel.subscriptions as Subscription<Subscriber>[]);
    channel.subscriptions = [];
    const key = audienceKey(channel.topic, channel.isPrivate);
    const set = this.audiences.get(key);
    if (!set) return;
    set.delete(channel);
    if (set.size === 0) this.audiences.delete(key);
  }

  /**
   * (Re)subscribes a channel's postgres_changes bindings; resolves with Realtime's system error
   * text when a binding is bad. The new subscriptions are in place before the old ones go, so a
   * re-subscribe with new claims loses no change (one matched by both still makes one frame per
   * channel). Of overlapping calls (join, then a token refresh) the latest wins.
   */
  async subscribe(channel: JoinedChannel): Promise<string | null> {
    const generation = ++channel.subscribeGeneration;
    const params = channel.bindings.map(({ id: _id, ...rest }) => rest as Record<string, unknown>);
    const result = await this.subscriptions.subscribe(
      channel,
      channel.claims.role,
      params,
      channel.bindings.map((b) => b.id),
    );
    if (generation !== channel.subscribeGeneration) {
      if (result.ok) this.subscriptions.unsubscribe(result.subscriptions);
      return result.ok ? null : result.message;
    }
    this.subscriptions.unsubscribe(channel.subscriptions as Subscription<Subscriber>[]);
    channel.subscriptions = [];
    if (!result.ok) return result.message;
    if (channel.open) channel.subscriptions = result.subscriptions;
    else this.subscriptions.unsubscribe(result.subscriptions);
    return null;
  }

  /** A client broadcast to the sender's audience (same topic, same private flag); `self` decides the echo. */
  broadcast(from: JoinedChannel, payload: Record<string, unknown>): void {
    for (const channel of this.audience(from.topic, from.isPrivate)) {
      if (channel === from && !channel.self) continue;
      channel.send('broadcast', payload);
    }
  }

  /** Tells every session that changes were lost (see RegistryEvents.resync). */
  resync(reason: string): void {
    this.emit('resync', reason);
  }
}
