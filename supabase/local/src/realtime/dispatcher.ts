import type { Sql } from 'postgres';
import { canSeeRow, hasRowLevelSecurity } from './authorization.ts';
import type { Change } from './change-feed.ts';
import { bindingMatches } from './filters.ts';
import type { JoinedChannel, SocketSession } from './socket-session.ts';

export type Subscribers = Map<string, Set<{ session: SocketSession; channel: JoinedChannel }>>;

/**
 * Turns replicated changes into Realtime frames: inserts into realtime.messages become Broadcast
 * from Database on their topic (private messages to private channels only); other changes become
 * `postgres_changes` frames — one per channel, listing every matching binding id — delivered only
 * to subscribers whose role and claims may SELECT the row (DELETEs are not RLS-checked, as on
 * Supabase). Changes are handled one at a time, in commit order.
 */
export class ChangeDispatcher {
  private queue: Promise<void> = Promise.resolve();
  private readonly rlsCache = new Map<string, boolean>();
  private readonly sql: Sql;
  private readonly subscribers: Subscribers;
  private readonly log: (message: string) => void;

  constructor(sql: Sql, subscribers: Subscribers, log: (message: string) => void) {
    this.sql = sql;
    this.subscribers = subscribers;
    this.log = log;
  }

  push(change: Change): void {
    // The RLS checks of a change start at once (they run concurrently, up to the pool size); the
    // frames go out strictly in commit order.
    const prepared = this.prepare(change);
    this.queue = this.queue
      .then(async () => {
        for (const send of await prepared) send();
      })
      .catch((err: unknown) => this.log(`realtime: dispatch failed: ${String(err)}`));
  }

  /** The frames a change turns into, as thunks to run in order. */
  private async prepare(change: Change): Promise<(() => void)[]> {
    if (change.schema === 'realtime' && change.table === 'messages') {
      return change.type === 'INSERT' && change.record ? [() => this.broadcastFromDatabase(change.record!)] : [];
    }
    const row = change.record ?? change.oldRecord;
    const rls = change.type !== 'DELETE' && (await hasRowLevelSecurity(this.sql, this.rlsCache, change.schema, change.table));
    // One RLS check per distinct role + claims and change, however many subscribers share them
    // (Realtime likewise checks once per role).
    const visibleTo = new Map<string, Promise<boolean>>();
    const canSee = (claims: JoinedChannel['claims']) => {
      const key = JSON.stringify(claims);
      let visible = visibleTo.get(key);
      if (!visible) {
        visible = canSeeRow(this.sql, claims, change.schema, change.table, change.keys, change.record ?? {});
        visibleTo.set(key, visible);
      }
      return visible;
    };
    const candidates: { session: SocketSession; channel: JoinedChannel; ids: number[] }[] = [];
    for (const entries of this.subscribers.values()) {
      for (const { session, channel } of entries) {
        const ids = channel.postgresChanges.filter((b) => bindingMatches(b, change.schema, change.table, change.type, row)).map((b) => b.id);
        if (ids.length > 0) candidates.push({ session, channel, ids });
      }
    }
    const visible = await Promise.all(candidates.map(({ channel }) => (rls ? canSee(channel.claims) : Promise.resolve(true))));
    const data: Record<string, unknown> = {
      schema: change.schema, table: change.table, commit_timestamp: change.commitTimestamp, type: change.type,
      columns: change.columns, errors: null,
    };
    if (change.record) data['record'] = change.record;
    if (change.type !== 'INSERT') data['old_record'] = change.oldRecord ?? {};
    return candidates
      .filter((_, i) => visible[i])
      .map(({ session, channel, ids }) => () =>
        session.send({ joinRef: null, ref: null, topic: channel.topic, event: 'postgres_changes', payload: { ids, data } }));
  }

  private broadcastFromDatabase(record: Record<string, unknown>): void {
    const topic = `realtime:${String(record['topic'])}`;
    const isPrivate = record['private'] === true;
    for (const { session, channel } of this.subscribers.get(topic) ?? []) {
      if (channel.isPrivate !== isPrivate) continue;
      session.send({
        joinRef: null, ref: null, topic, event: 'broadcast',
        payload: { type: 'broadcast', event: record['event'], payload: record['payload'] },
      });
    }
  }
}
