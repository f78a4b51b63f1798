import { untrack } from 'svelte';
import { ChannelLifecycle, type LiveChannelOptions, type LiveStatus } from './channel-lifecycle.ts';
import { supabase } from './client.ts';

export type { LiveChannelOptions, LiveStatus, RawMessage } from './channel-lifecycle.ts';

/**
 * One Realtime channel for a page, with its status as `$state`: validates each message, queues it,
 * and applies the queue in batches, so hundreds of updates per second cost a handful of renders.
 * The snapshot is reloaded whenever the server says the feed is live, and messages that arrive
 * before that reload is done wait and are applied on top of it. The lifecycle itself (feed
 * signals, rejoin after a server close, leaving) is `ChannelLifecycle`, which runs without Svelte.
 */
export class LiveChannel<T> {
  status: LiveStatus = $state('connecting');
  #options: LiveChannelOptions<T>;
  #lifecycle: ChannelLifecycle<T> | null = null;

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
    if (this.#lifecycle) throw new Error(`live channel ${this.#options.topic} is already connected`);
    // Made here, not in the constructor: pages construct their channels during SSR too, and the
    // supabase-js client exists only in the browser.
    const lifecycle = new ChannelLifecycle<T>({
      ...this.#options,
      client: supabase(),
      onStatus: (status) => (this.status = status),
    });
    this.#lifecycle = lifecycle;
    lifecycle.connect();
    return () => this.disconnect();
  }

  disconnect(): void {
    this.#lifecycle?.disconnect();
    this.#lifecycle = null;
  }
}
