import {
  REALTIME_SUBSCRIBE_STATES,
  type RealtimeChannel,
  type RealtimeChannelOptions,
  type RealtimePostgresChangesPayload,
  type SupabaseClient,
} from '@supabase/supabase-js';
import { z } from 'zod';

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
   * Reloads the snapshot. Called each time the server says the feed is live — after every join and
   * after every restart of the feed — since Realtime replays nothing that happened before.
   */
  reload: () => Promise<void>;
  /** Messages are applied at most this often, one state update per batch (default 200 ms). */
  flushMs?: number;
}

/** The timer functions the lifecycle uses (tests pass their own to see that none is left). */
export interface Timers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface ChannelLifecycleOptions<T> extends LiveChannelOptions<T> {
  /** The supabase-js client; its `accessToken` callback supplies the JWT of every join. */
  client: SupabaseClient;
  /** Called whenever the status changes. */
  onStatus: (status: LiveStatus) => void;
  /** Rejoin backoff after the server closed the channel: exponential from `initialMs`, capped (1 s, 30 s). */
  rejoin?: { initialMs?: number; maxMs?: number };
  timers?: Timers;
  log?: Pick<Console, 'warn' | 'error'>;
}

/** The server's signals that a feed is live: `postgres_changes` for the change feed, `system` for the replication connection. */
type Feed = 'postgres_changes' | 'replication';

const systemMessage = z.object({ extension: z.string(), status: z.string(), message: z.string().optional() });

/** Messages kept while a page waits for its snapshot; a reload is coming that supersedes them. */
const MAX_HELD_MESSAGES = 10_000;

const defaultTimers: Timers = {
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/**
 * One Realtime channel through its whole life: join, wait until the server says the feed is live,
 * reload the snapshot, apply messages in batches; rejoin after the server closes it; leave.
 *
 * SUBSCRIBED only means the join was accepted: Supabase answers the join before the change feed
 * is subscribed (writes made 1–3 s later are missed, supabase/realtime-js#525), and restarts the
 * feed without a new SUBSCRIBED. So the snapshot is reloaded on the feed's own signals — the
 * `system` message "Subscribed to PostgreSQL" for postgres_changes, and "Replication connection
 * established" (asked for with `broadcast.replication_ready`) for Broadcast from Database — and
 * the status is `live` only then. Messages that arrive before the reload is done wait in the
 * queue and are applied on top of the new snapshot.
 *
 * Retries have one owner each: realtime-js rejoins channels that errored (socket drops, refused
 * joins, timeouts), this class rejoins channels the server closed (token expiry, rate and size
 * limits: a `system` error then `phx_close`, which realtime-js reports as CLOSED and never rejoins).
 */
export class ChannelLifecycle<T> {
  readonly #options: ChannelLifecycleOptions<T>;
  readonly #timers: Timers;
  readonly #log: Pick<Console, 'warn' | 'error'>;
  /** The feeds this channel waits for: their signals come after the join. */
  readonly #feeds: Feed[];
  #connected = false;
  /** Bumped by every join and by disconnect: a join that finds it changed gives up. */
  #generation = 0;
  /** The channel of the current join; callbacks of any other (older) channel are ignored. */
  #channel: RealtimeChannel | null = null;
  /** Feeds of the current join that have said they are live. */
  #ready = new Set<Feed>();
  #status: LiveStatus = 'connecting';
  /** Server closes in a row, each soon after the last rejoin: the backoff's exponent. */
  #closes = 0;
  /** When the current join went live (null: not live since the last rejoin). */
  #liveSince: number | null = null;
  #rejoinTimer: unknown = null;
  #flushTimer: unknown = null;
  #reloads = 0;
  /** Failed reloads in a row (the retry's backoff exponent) and the pending retry. */
  #reloadFailures = 0;
  #reloadTimer: unknown = null;
  #queue: T[] = [];

  constructor(options: ChannelLifecycleOptions<T>) {
    this.#options = options;
    this.#timers = options.timers ?? defaultTimers;
    this.#log = options.log ?? console;
    this.#feeds = [
      ...((options.postgresChanges?.length ?? 0) > 0 ? ['postgres_changes' as const] : []),
      ...(options.private && (options.broadcastEvents?.length ?? 0) > 0 ? ['replication' as const] : []),
    ];
  }

  get status(): LiveStatus {
    return this.#status;
  }

  connect(): void {
    if (this.#connected) throw new Error(`live channel ${this.#options.topic} is already connected`);
    this.#connected = true;
    this.#closes = 0;
    this.#liveSince = null;
    this.#setStatus('connecting');
    void this.#join();
  }

  /** Leaves the channel and stops everything: no timer and no channel is left behind. */
  disconnect(): void {
    this.#connected = false;
    this.#generation++;
    if (this.#rejoinTimer !== null) this.#timers.clearTimeout(this.#rejoinTimer);
    if (this.#reloadTimer !== null) this.#timers.clearTimeout(this.#reloadTimer);
    this.#reloadTimer = null;
    this.#rejoinTimer = null;
    this.#clearFlush();
    this.#queue = [];
    this.#ready.clear();
    const channel = this.#channel;
    this.#channel = null;
    if (channel) {
      this.#options.client
        .removeChannel(channel)
        .catch((err: unknown) => this.#log.warn(`${this.#prefix}: leaving failed`, err));
    }
  }

  get #prefix(): string {
    return `[bfg] realtime ${this.#options.topic}`;
  }

  async #join(): Promise<void> {
    const generation = ++this.#generation;
    try {
      await this.#subscribe(generation);
    } catch (err) {
      if (generation !== this.#generation) return;
      this.#log.error(`${this.#prefix}: joining failed`, err);
      this.#scheduleRejoin();
    }
  }

  async #subscribe(generation: number): Promise<void> {
    const { client } = this.#options;
    // supabase-js hands back a channel it still lists under the same topic — e.g. the previous
    // page's `site:1`, still leaving, or one realtime-js gave up on — and that one never subscribes
    // again. Remove those first (awaited: an old channel's close unlists every channel of its
    // topic, so it must not land after the new one is listed).
    const stale = client.getChannels().filter((c) => c.topic === `realtime:${this.#options.topic}`);
    await Promise.all(stale.map((c) => client.removeChannel(c)));
    if (generation !== this.#generation) return;
    // The join must carry the user's JWT: supabase-js reads the token from the accessToken callback
    // asynchronously, and a join sent before it resolves goes out with the anon key (refused on a
    // private channel, RLS-empty on postgres_changes). So: token first, then subscribe.
    await client.realtime.setAuth();
    if (generation !== this.#generation) return;
    const channel = client.channel(this.#options.topic, { config: this.#config() });
    // Another channel of this topic was listed meanwhile; the next attempt removes it.
    if (channel.joinedOnce) throw new Error('a channel of this topic is still in use');
    this.#channel = channel;
    for (const binding of this.#options.postgresChanges ?? []) {
      channel.on(
        'postgres_changes',
        {
          event: binding.event ?? '*',
          schema: 'public',
          table: binding.table,
          ...(binding.filter ? { filter: binding.filter } : {}),
        },
        (payload: RealtimePostgresChangesPayload<Record<string, unknown>>) =>
          this.#receive(channel, {
            kind: 'postgres',
            table: payload.table,
            eventType: payload.eventType,
            record: payload.new,
            oldRecord: payload.old,
          }),
      );
    }
    for (const event of this.#options.broadcastEvents ?? []) {
      channel.on('broadcast', { event }, (message: { event: string; payload: unknown }) =>
        this.#receive(channel, { kind: 'broadcast', event: message.event, payload: message.payload }),
      );
    }
    channel.on('system', {}, (payload: unknown) => this.#system(channel, payload));
    channel.subscribe((state, err) => this.#subscribeState(channel, state, err));
  }

  #config(): RealtimeChannelOptions['config'] {
    const isPrivate = this.#options.private ?? false;
    // Without replication_ready Supabase sends no signal for Broadcast from Database, and a join
    // answered before the replication connection is up misses what is broadcast meanwhile.
    return this.#feeds.includes('replication')
      ? { private: isPrivate, broadcast: { ack: false, self: false, replication_ready: true } }
      : { private: isPrivate };
  }

  #subscribeState(channel: RealtimeChannel, state: REALTIME_SUBSCRIBE_STATES, err: Error | undefined): void {
    if (channel !== this.#channel) return;
    switch (state) {
      case REALTIME_SUBSCRIBE_STATES.SUBSCRIBED:
        // A new join: every feed must say again that it is live. Nothing else to wait for on a
        // channel without feeds (public broadcasts): the join is all there is.
        this.#ready.clear();
        if (this.#status === 'live') this.#setStatus('reconnecting');
        if (this.#feeds.length === 0) this.#feedLive();
        return;
      case REALTIME_SUBSCRIBE_STATES.CHANNEL_ERROR:
      case REALTIME_SUBSCRIBE_STATES.TIMED_OUT:
        this.#broken();
        if (err) this.#log.warn(`${this.#prefix}: ${err.message}`);
        // realtime-js rejoins an errored channel by itself; one it has closed or dropped instead
        // (a binding mismatch) is ours to rejoin. Checked once its own handlers have run.
        queueMicrotask(() => {
          if (
            channel === this.#channel &&
            (channel.state === 'closed' || !this.#options.client.getChannels().includes(channel))
          ) {
            this.#scheduleRejoin();
          }
        });
        return;
      case REALTIME_SUBSCRIBE_STATES.CLOSED:
        // Not ours (disconnect() forgets the channel before leaving): the server closed it.
        this.#broken();
        this.#scheduleRejoin();
        return;
    }
  }

  #system(channel: RealtimeChannel, payload: unknown): void {
    if (channel !== this.#channel) return;
    const parsed = systemMessage.safeParse(payload);
    if (!parsed.success) {
      this.#log.warn(`${this.#prefix}: ignored a system message that did not validate`, payload);
      return;
    }
    const { extension, status, message } = parsed.data;
    if (extension === 'postgres_changes') {
      if (status === 'ok') return this.#signal('postgres_changes');
      // The channel stays open and Supabase retries the subscription (an ok follows if it works);
      // until then changes are not delivered, so the page must not say live.
      this.#log.error(`${this.#prefix}: the change feed failed: ${message ?? status}`);
      this.#ready.delete('postgres_changes');
      this.#setStatus('reconnecting');
      return;
    }
    if (extension === 'system') {
      if (status === 'ok' && this.#feeds.includes('replication')) return this.#signal('replication');
      // The server is closing the channel (token expired, rate or size limit); phx_close follows.
      if (status === 'error') {
        this.#log.warn(`${this.#prefix}: closed by the server: ${message ?? status}`);
        this.#broken();
      }
    }
  }

  #signal(feed: Feed): void {
    this.#ready.add(feed);
    if (this.#feeds.every((f) => this.#ready.has(f))) this.#feedLive();
  }

  /**
   * Every feed is live: reload (again, on every signal — a restarted feed missed what happened
   * meanwhile). The page is live once a reload succeeded; a failed one is retried with backoff,
   * the status staying `reconnecting` (the snapshot is older than the gap).
   */
  #feedLive(): void {
    this.#reloadFailures = 0;
    void this.#reload();
  }

  /**
   * The channel stopped following changes. What is still queued arrived before the gap, so the
   * next snapshot already holds it, and applying it on top would undo what happened in the gap.
   */
  #broken(): void {
    this.#ready.clear();
    this.#queue = [];
    this.#clearFlush();
    this.#setStatus('reconnecting');
  }

  #scheduleRejoin(): void {
    if (!this.#connected || this.#rejoinTimer !== null) return;
    // The old channel's callbacks are ignored from here on; #join removes it if still listed.
    this.#channel = null;
    this.#generation++;
    this.#setStatus('reconnecting');
    const initialMs = this.#options.rejoin?.initialMs ?? 1_000;
    const maxMs = this.#options.rejoin?.maxMs ?? 30_000;
    // Going live is not enough to start the backoff over: a channel that a limit closes again
    // right after each rejoin would reload its snapshot every second. It must have stayed up.
    if (this.#liveSince !== null && Date.now() - this.#liveSince >= maxMs) this.#closes = 0;
    this.#liveSince = null;
    const delay = backoffDelay(this.#closes++, initialMs, maxMs);
    this.#rejoinTimer = this.#timers.setTimeout(() => {
      this.#rejoinTimer = null;
      void this.#join();
    }, delay);
  }

  #receive(channel: RealtimeChannel, message: RawMessage): void {
    if (channel !== this.#channel) return;
    const parsed = this.#options.parse(message);
    if (parsed === undefined) return;
    if (parsed === null) {
      this.#log.warn(`${this.#prefix}: dropped a message that did not validate`, message);
      return;
    }
    this.#queue.push(parsed);
    // While held, a reload is coming that supersedes what waits: past a bound, drop it.
    if (this.#holding && this.#queue.length > MAX_HELD_MESSAGES) this.#queue = [];
    this.#schedule();
  }

  /** Messages wait while the feed is not live yet and while a reload runs; the reload's end flushes them. */
  get #holding(): boolean {
    return this.#status !== 'live' || this.#reloads > 0;
  }

  #schedule(): void {
    if (this.#flushTimer !== null || this.#holding) return;
    this.#flushTimer = this.#timers.setTimeout(() => {
      this.#flushTimer = null;
      this.#flush();
    }, this.#options.flushMs ?? 200);
  }

  #flush(): void {
    if (this.#queue.length === 0 || this.#holding) return;
    const batch = this.#queue;
    this.#queue = [];
    this.#options.apply(batch);
  }

  async #reload(): Promise<void> {
    const generation = this.#generation;
    this.#reloads++;
    let ok = false;
    try {
      await this.#options.reload();
      ok = true;
    } catch (err) {
      this.#log.error(`${this.#prefix}: reloading the snapshot failed`, err);
    } finally {
      this.#reloads--;
    }
    if (generation !== this.#generation || !this.#connected) return;
    if (ok) {
      this.#liveSince ??= Date.now();
      this.#setStatus('live');
      this.#flush();
      return;
    }
    this.#setStatus('reconnecting');
    if (this.#reloadTimer !== null) return;
    const delay = backoffDelay(
      this.#reloadFailures++,
      this.#options.rejoin?.initialMs ?? 1_000,
      this.#options.rejoin?.maxMs ?? 30_000,
    );
    this.#reloadTimer = this.#timers.setTimeout(() => {
      this.#reloadTimer = null;
      if (generation === this.#generation && this.#connected) void this.#reload();
    }, delay);
  }

  #clearFlush(): void {
    if (this.#flushTimer !== null) this.#timers.clearTimeout(this.#flushTimer);
    this.#flushTimer = null;
  }

  #setStatus(status: LiveStatus): void {
    if (status === this.#status) return;
    this.#status = status;
    this.#options.onStatus(status);
  }
}

/**
 * Capped exponential backoff with jitter (0.5–1× the exponential delay, as the ingestor's broker
 * reconnects): a rate limit closes many clients' channels at once, and they must not all come
 * back on the same tick. For 1 s, cap 30 s: ~0.5–1, 1–2, 2–4, 4–8, 8–16, 15–30 s, …
 */
export function backoffDelay(
  attempt: number,
  initialMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  const exponential = Math.min(maxMs, initialMs * 2 ** Math.max(0, attempt));
  return Math.round(exponential * (0.5 + random() / 2));
}
