import { LiveChannel, type LiveStatus } from '#lib/realtime/live-channel.svelte.ts';
import { parseSiteChanges } from './messages.ts';
import { MAX_SITE_CHANNELS, SITE_CHANGES_EVENT, type SiteChanges } from './site-changes.ts';

/**
 * Channels following the `changes` broadcast of several sites, for pages that do not apply the
 * rows but refresh when something they show changed (Sites: device counts; Topics, Logs: a
 * connection's topics or parsing log). `concerns` says whether a message matters to the page;
 * `refresh` runs for those, and whenever a channel goes live (Realtime replays nothing, so a
 * change made while a channel was down is only in a fresh view). Only the first
 * MAX_SITE_CHANNELS sites are followed; a refresh reads the page's whole view, so changes of the
 * others show with the next one.
 */
export function siteChangeChannels(
  siteIds: readonly number[],
  concerns: (changes: SiteChanges) => boolean,
  refresh: () => void,
): LiveChannel<true>[] {
  return [...new Set(siteIds)].slice(0, MAX_SITE_CHANNELS).map(
    (siteId) =>
      new LiveChannel<true>({
        topic: `site:${siteId}`,
        private: true,
        broadcastEvents: [SITE_CHANGES_EVENT],
        parse: (message) => {
          const changes = parseSiteChanges(message);
          if (changes === null) return null;
          return concerns(changes) ? true : undefined;
        },
        apply: () => refresh(),
        reload: () => {
          refresh();
          return Promise.resolve();
        },
      }),
  );
}

/** Connects every channel; returns one cleanup for `$effect`. */
export function connectAll(channels: readonly { connect(): () => void }[]): () => void {
  const cleanups = channels.map((channel) => channel.connect());
  return () => {
    for (const cleanup of cleanups) cleanup();
  };
}

const worstFirst: LiveStatus[] = ['unavailable', 'reconnecting', 'connecting', 'live'];

/** The status of several channels as one indicator shows it: the worst of them (live when there are none). */
export function combinedStatus(channels: readonly { status: LiveStatus }[]): LiveStatus {
  return worstFirst.find((status) => channels.some((c) => c.status === status)) ?? 'live';
}

/** The ids of a comma-joined list (pages derive channel sets from a string, so a reload of `data` that lists the same sites keeps them). */
export const idList = (joined: string): number[] => joined.split(',').filter(Boolean).map(Number);
