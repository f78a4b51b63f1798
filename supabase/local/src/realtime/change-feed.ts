import postgres from 'postgres';
import { backoffDelay } from '@bfg/ingestor';
import type { ChangeType } from './filters.ts';
import type { PgOutputMessage, Relation, TextTuple } from './pgoutput.ts';
import { openReplicationSession, type ReplicationSession } from './replication-stream.ts';
import type { TypeInfo } from './wal-values.ts';

/** A relation as the feed knows it, with what the dispatcher must look up before using its rows. */
export interface FeedRelation extends Relation {
  /** Primary key columns from the catalog (not the replica identity: under FULL that is every column). */
  readonly primaryKey: Promise<string[]>;
}

/** One row change as replicated: values still as text, converted by the dispatcher. */
export interface Change {
  relation: FeedRelation;
  type: ChangeType;
  /** The new row (INSERT, UPDATE). */
  tuple: TextTuple | null;
  /** The old row: its replica identity columns (`key`) or all of it (`full`, REPLICA IDENTITY FULL). */
  old: { kind: 'key' | 'full'; tuple: TextTuple } | null;
  /** When the transaction committed. */
  commitTime: Date;
}

/** Changes in commit order; `lsn` is set when the batch ends a transaction (its end LSN, to confirm). */
export interface ChangeBatch {
  changes: Change[];
  lsn: bigint | null;
}

/** Where batches go. `push` returns false when the consumer is full: the feed then stops reading. */
export interface ChangeSink {
  push(batch: ChangeBatch): boolean;
  /** Resolves when the consumer has room again. */
  waitForRoom(): Promise<void>;
  /** (Re)connected: every earlier change was delivered or lost with the old stream. */
  onConnect(): void;
  /** The stream failed; changes made until the next onConnect are lost. */
  onDisconnect(): void;
}

/** A transaction larger than this is handed over in parts, so memory does not grow with its size. */
const MAX_BATCH_CHANGES = 1_000;

export interface ChangeFeed {
  /** Marks everything up to `lsn` as handled (Postgres may recycle that WAL). */
  confirm(lsn: bigint): void;
  stop(): Promise<void>;
}

/**
 * Streams row changes of the given publications over logical replication (pgoutput), with flow
 * control: when the sink is full the feed stops reading the socket, and Postgres holds the WAL.
 * Owns the reconnects: when the stream fails (Postgres restarted), a new session is made with
 * backoff until Postgres accepts it; as on Supabase, changes made meanwhile are not replayed.
 */
export async function startChangeFeed(
  url: string,
  publications: string[],
  types: Map<number, TypeInfo>,
  sink: ChangeSink,
): Promise<ChangeFeed> {
  const catalog = postgres(url, { max: 1, onnotice: () => undefined, connect_timeout: 5, idle_timeout: 30 });
  const loadTypes = async () => {
    const rows = await catalog<{ oid: number; typname: string; typcategory: string; typelem: number }[]>`
      select oid::int as oid, typname, typcategory, typelem::int as typelem from pg_type`;
    for (const r of rows) types.set(r.oid, { name: r.typname, category: r.typcategory, elem: r.typelem });
  };
  await loadTypes();

  const relations = new Map<number, FeedRelation>();
  let batch: Change[] = [];
  let commitTime = new Date();
  let session: ReplicationSession | undefined;
  let stopped = false;
  let waiting = false;
  // Commit LSNs handed over and confirmed by the consumer: caught up when they meet.
  let inTransaction = false;
  let delivered = 0n;
  let dispatched = 0n;
  const caughtUp = () => !inTransaction && dispatched >= delivered;

  const deliver = (lsn: bigint | null) => {
    const full = !sink.push({ changes: batch, lsn });
    batch = [];
    if (full && !waiting && session) {
      const paused = session;
      waiting = true;
      paused.pause();
      void sink.waitForRoom().then(() => {
        waiting = false;
        paused.resume();
      });
    }
  };

  const onMessage = (message: PgOutputMessage) => {
    switch (message.tag) {
      case 'begin':
        commitTime = message.commitTime;
        batch = [];
        inTransaction = true;
        return;
      case 'commit':
        inTransaction = false;
        delivered = message.endLsn;
        deliver(message.endLsn);
        return;
      case 'relation': {
        const { relation } = message;
        // Types created after start (a new enum, its array type) are looked up before use.
        const unknown = relation.columns.some((c) => !types.has(c.typeOid));
        const ready = unknown ? loadTypes() : Promise.resolve();
        const primaryKey = ready
          .then(
            () => catalog<{ name: string }[]>`
          select a.attname as name from pg_index i
          join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any (i.indkey)
          where i.indrelid = ${relation.oid} and i.indisprimary
          order by array_position(i.indkey::int2[], a.attnum)`,
          )
          .then((rows) => rows.map((r) => r.name));
        primaryKey.catch(() => undefined);
        relations.set(relation.oid, { ...relation, primaryKey });
        return;
      }
      case 'insert':
      case 'update':
      case 'delete': {
        const relation = relations.get(message.relationOid);
        if (!relation) return;
        batch.push({
          relation,
          type: message.tag === 'insert' ? 'INSERT' : message.tag === 'update' ? 'UPDATE' : 'DELETE',
          tuple: message.tag === 'delete' ? null : message.tuple,
          old: message.tag === 'insert' ? null : message.old,
          commitTime,
        });
        if (batch.length >= MAX_BATCH_CHANGES) deliver(null);
        return;
      }
      default:
        return;
    }
  };

  let attempt = 0;
  let retry: { timer: NodeJS.Timeout; wake: () => void } | undefined;
  const run = async (): Promise<void> => {
    while (!stopped) {
      let current: ReplicationSession;
      try {
        current = await openReplicationSession(url, publications, onMessage, caughtUp);
      } catch {
        await new Promise<void>((resolve) => {
          const wake = () => {
            clearTimeout(timer);
            retry = undefined;
            resolve();
          };
          const timer = setTimeout(wake, backoffDelay(attempt++, { maxMs: 5_000 }));
          retry = { timer, wake };
        });
        continue;
      }
      if (stopped) {
        await current.end();
        return;
      }
      session = current;
      attempt = 0;
      batch = [];
      inTransaction = false;
      delivered = dispatched = 0n;
      sink.onConnect();
      await current.closed;
      // Closed by stop(): an intended end, not a loss to report.
      if (!stopped) sink.onDisconnect();
      session = undefined;
      waiting = false;
      await current.end();
    }
  };
  // The first connect must succeed before the server reports itself started.
  const first = await openReplicationSession(url, publications, onMessage, caughtUp);
  session = first;
  sink.onConnect();
  const loop = (async () => {
    await first.closed;
    if (!stopped) sink.onDisconnect();
    session = undefined;
    waiting = false;
    await first.end();
    await run();
  })();

  return {
    confirm(lsn) {
      if (lsn > dispatched) dispatched = lsn;
      session?.confirm(lsn);
    },
    async stop() {
      stopped = true;
      retry?.wake();
      await session?.end();
      await loop.catch(() => undefined);
      await catalog.end({ timeout: 1 }).catch(() => undefined);
    },
  };
}
