import type { RealtimeChannel } from '@supabase/supabase-js';
import { Inbox } from './wait.ts';

export interface FollowedChannel {
  /** Subscribe statuses in order: SUBSCRIBED, CHANNEL_ERROR, TIMED_OUT, CLOSED. */
  statuses: Inbox<string>;
  /** The errors that came with CHANNEL_ERROR statuses, in order. */
  errors: Error[];
  /** The channel's `system` messages in order (feed subscribed, feed errors, shutdowns). */
  system: Inbox<Record<string, unknown>>;
  /**
   * Resolves on the next "Subscribed to PostgreSQL": the moment the postgres_changes feed is
   * really live. Realtime replies to the join (SUBSCRIBED) before it subscribes the feed, so a
   * change committed between the two is not delivered; tests wait for this instead.
   */
  feedLive(what?: string, timeoutMs?: number): Promise<void>;
}

/** Subscribes `channel` (its bindings set up), recording statuses and system messages. */
export function follow(channel: RealtimeChannel): FollowedChannel {
  const statuses = new Inbox<string>();
  const system = new Inbox<Record<string, unknown>>();
  const errors: Error[] = [];
  channel.on('system', {}, (payload: Record<string, unknown>) => system.push(payload));
  channel.subscribe((status, error) => {
    if (error) errors.push(error);
    statuses.push(String(status));
  });
  return {
    statuses,
    errors,
    system,
    async feedLive(what = 'the postgres_changes feed', timeoutMs = 10_000) {
      for (;;) {
        const message = await system.next(`${what} to be subscribed`, timeoutMs);
        if (message['extension'] === 'postgres_changes' && message['status'] === 'ok') return;
        if (message['extension'] === 'postgres_changes') throw new Error(`${what} failed: ${String(message['message'])}`);
      }
    },
  };
}
