import { REALTIME_SUBSCRIBE_STATES, type RealtimeChannel, type RealtimePostgresChangesPayload } from '@supabase/supabase-js';
import { untrack } from 'svelte';
import { supabase } from './client.ts';

/** What the page shows about its live feed. */
export type LiveStatus = 'connecting' | 'live' | 'reconnecting' | 'unavailable';

/** A message as it arrives, before the page's zod schema has looked at it. */
export type RawMessage =
  | { kind: 'postgres'; table: string; eventType: 'INSERT' | 'UPDATE' | 'DELETE'; record: unknown; oldRecord: unknown }
  | { kind: 'broadcast'; event: string; payload: unknown };

export interface LiveChannelOptions<T> {
  /** Channel topic; private channels (Broadcast from Database) are authorized by realtime.messages policies. */
  topic: string;
  private?: boolean;
  postgresChanges?: { table: string; event?: '*' | 'INSERT' | 'UPDATE' | 'DELETE'; filter?: string }[];
  broadcastEvents?: string[];
  /**
   * Validates one message. null = invalid: dropped and logged, so a bad payload never reaches the
   * page; undefined = valid but not for this page (another sensor's update): dropped quietly.
   */
  parse: (message: RawMessage) => T | null | undefined;
  /** Applies a batch, in arrival order. */
  apply: (batch: T[]) => void;
  /**
   * Reloads the snapshot. Called on every SUBSCRIBED: Realtime replays nothing after a reconnect,
   * so whatever changed while the channel was down is only in a fresh snapshot.
   */
  reload: () => Promise<void>;
  /** Messages are applied at most this often, one state update per batch (default 200 ms). */
  flushMs?: number;
}

/**
 * One Realtime channel for a page: validates each message, queues it, and applies the queue in
 * batches, so hundreds of updates per second cost a handful of renders. Messages that arrive while
 * the snapshot reloads wait and are applied on top of it.
 */
export class LiveChannel<T> {
  status: LiveStatus = $state('connecting');
  #options: LiveChannelOptions<T>;
  #queue: T[] = [];
  #timer: ReturnType<typeof setTimeout> | null = null;
  #reloading = false;
  #channel: RealtimeChannel | null = null;

  constructor(options: LiveChannelOptions<T>) {
    this.#options = options;
  }

  /**
   * Subscribes; returns the cleanup for `$effect`. Untracked: nothing read while subscribing makes
   * the calling effect re-run (a reload of `data` must not tear the channel down).
   */
  connect(): () => void {
    return untrack(() => this.#connect());
  }

  #connect(): () => void {
    if (this.#channel) throw new Error(`live channel ${this.#options.topic} is already connected`);
    const client = supabase();
    // supabase-js hands back a channel it still lists under the same topic — e.g. the previous
    // page's `site:1`, still leaving — and that one never subscribes again. Start from a new one.
    const stale = client.getChannels().filter((c) => c.topic === `realtime:${this.#options.topic}`);
    const channel = client.channel(this.#options.topic, { config: { private: this.#options.private ?? false } });
    for (const binding of this.#options.postgresChanges ?? []) {
      channel.on(
        'postgres_changes',
        { event: binding.event ?? '*', schema: 'public', table: binding.table, ...(binding.filter ? { filter: binding.filter } : {}) },
        (payload: RealtimePostgresChangesPayload<Record<string, unknown>>) =>
          this.#receive({ kind: 'postgres', table: payload.table, eventType: payload.eventType, record: payload.new, oldRecord: payload.old }),
      );
    }
    for (const event of this.#options.broadcastEvents ?? []) {
      channel.on('broadcast', { event }, (message: { event: string; payload: unknown }) =>
        this.#receive({ kind: 'broadcast', event: message.event, payload: message.payload }));
    }
    // The join must carry the user's JWT: supabase-js reads the token from the accessToken callback
    // asynchronously, and a join sent before it resolves goes out with the anon key (refused on a
    // private channel, RLS-empty on postgres_changes). So: token first, then subscribe.
    void Promise.all(stale.map((c) => client.removeChannel(c))).then(() => client.realtime.setAuth()).then(() => {
      if (this.#channel !== channel) return;
      channel.subscribe((state, err) => {
        if (state === REALTIME_SUBSCRIBE_STATES.SUBSCRIBED) {
          this.status = 'live';
          void this.#reload();
        } else if (state === REALTIME_SUBSCRIBE_STATES.CHANNEL_ERROR || state === REALTIME_SUBSCRIBE_STATES.TIMED_OUT) {
          this.status = 'reconnecting';
          if (err) console.warn(`[bfg] realtime ${this.#options.topic}: ${err.message}`);
        } else if (state === REALTIME_SUBSCRIBE_STATES.CLOSED) {
          this.status = 'unavailable';
        }
      });
    }, (err: unknown) => {
      this.status = 'unavailable';
      console.error(`[bfg] realtime ${this.#options.topic}: no access token`, err);
    });
    this.#channel = channel;
    return () => this.disconnect();
  }

  disconnect(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#queue = [];
    if (this.#channel) void supabase().removeChannel(this.#channel);
    this.#channel = null;
  }

  #receive(message: RawMessage): void {
    if (!this.#channel) return;
    const parsed = this.#options.parse(message);
    if (parsed === undefined) return;
    if (parsed === null) {
      console.warn(`[bfg] realtime ${this.#options.topic}: dropped a message that did not validate`, message);
      return;
    }
    this.#queue.push(parsed);
    this.#schedule();
  }

  #schedule(): void {
    if (this.#timer || this.#reloading) return;
    this.#timer = setTimeout(() => this.#flush(), this.#options.flushMs ?? 200);
  }

  #flush(): void {
    this.#timer = null;
    if (this.#queue.length === 0 || this.#reloading) return;
    const batch = this.#queue;
    this.#queue = [];
    this.#options.apply(batch);
  }

  async #reload(): Promise<void> {
    this.#reloading = true;
    try {
      await this.#options.reload();
    } catch (err) {
      console.error(`[bfg] realtime ${this.#options.topic}: reloading the snapshot failed`, err);
    } finally {
      this.#reloading = false;
      this.#flush();
    }
  }
}
