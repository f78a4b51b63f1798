import type { Change, ChangeBatch } from './change-feed.ts';
import { passesFilter } from './filters.ts';
import type { Claims } from './jwt.ts';
import type { TextTuple } from './pgoutput.ts';
import { isPolicyError } from './authorization.ts';
import type { CheckedTable, RowAccess } from './row-access.ts';
import type { Subscription, SubscriptionIndex } from './subscriptions.ts';
import { typeName, walValue, type TypeInfo } from './wal-values.ts';

/** A joined channel as the dispatcher sees it: where frames go and with whose claims. */
export interface Subscriber {
  readonly topic: string;
  readonly claims: Claims;
  /** `claims` as a string, computed once per claims (the key of shared RLS lookups). */
  readonly claimsKey: string;
  readonly isPrivate: boolean;
  /** False once the channel left or closed: nothing more is sent to it. */
  readonly open: boolean;
  /** Sends one frame (the session encodes it for its protocol version and bounds its buffer). */
  send(event: string, payload: Record<string, unknown>): void;
}

export interface DispatcherDeps {
  rowAccess: RowAccess;
  subscriptions: SubscriptionIndex<Subscriber>;
  /** Channels joined on a topic, by audience (private and public channels of a name are apart). */
  audience(topic: string, isPrivate: boolean): Iterable<Subscriber>;
  types: ReadonlyMap<number, TypeInfo>;
  /** Everything up to this LSN was dispatched. */
  confirm(lsn: bigint): void;
  /**
   * Changes of a round could not be dispatched (the database failed under a lookup): the
   * subscribers missed them and must be told to reload, as after a replication gap.
   */
  onLoss(reason: string): void;
  log(message: string): void;
}

/** Queued changes beyond which the feed is told to stop reading (it resumes below LOW_WATER). */
const HIGH_WATER = 10_000;
const LOW_WATER = 2_000;
/** Changes handled per round: one RLS check per distinct claims per table per round. */
const ROUND_CHANGES = 2_000;
/** How long after a first RLS lookup that found rows invisible they are looked up again. */
const RECHECK_MS = 20;
/** Longest stretch of sending before the dispatcher yields to the event loop. */
const SLICE_MS = 10;
/** Realtime's poll_max_record_bytes: larger records keep only their small fields, with an error. */
const MAX_RECORD_BYTES = 1_048_576;
const SMALL_FIELD_BYTES = 64;

type Row = Record<string, unknown>;

interface Planned {
  change: Change;
  primaryKey: string[];
  record: Row | null;
  oldRecord: Row | null;
  /** Key values as text, for the RLS lookup. */
  keyText: string[];
  /** The table has row level security (then a deleted row's old record is its key only). */
  tableRls: boolean;
  /** The row must be looked up as each subscriber (RLS, and not a DELETE). */
  rls: boolean;
  matches: Map<Subscriber, Match>;
}

/** A subscriber's part in a change, with its claims as they were when the change was planned. */
interface Match {
  ids: number[];
  role: string;
  claims: Claims;
  claimsKey: string;
}

/**
 * Turns replicated changes into Realtime frames, in commit order, in rounds: each round finds the
 * subscriptions of each change's table (indexed, filters parsed at join), checks row visibility
 * once per distinct set of claims per table for the whole round, in one transaction each (as
 * Realtime checks once per role per change, but batched), narrows records to the columns each
 * role may select, and sends one frame per channel listing every matching binding id. Inserts
 * into realtime.messages become Broadcast from Database, to the private or public audience their
 * `private` flag names. The queue is bounded: past HIGH_WATER the feed stops reading, so a burst
 * makes Postgres hold the WAL rather than this process.
 */
export class ChangeDispatcher {
  private queue: ChangeBatch[] = [];
  private queued = 0;
  private running: Promise<void> | undefined;
  private roomWaiters: (() => void)[] = [];
  private readonly deps: DispatcherDeps;
  /** Totals since start, for the benchmark. */
  readonly totals = { changes: 0, frames: 0, rounds: 0, peakQueued: 0 };

  constructor(deps: DispatcherDeps) {
    this.deps = deps;
  }

  push(batch: ChangeBatch): boolean {
    this.queue.push(batch);
    this.queued += batch.changes.length;
    this.totals.peakQueued = Math.max(this.totals.peakQueued, this.queued);
    this.running ??= this.drain();
    return this.queued < HIGH_WATER;
  }

  waitForRoom(): Promise<void> {
    if (this.queued < LOW_WATER) return Promise.resolve();
    return new Promise((resolve) => this.roomWaiters.push(resolve));
  }

  /**
   * Works the queue until it is empty. `running` is cleared in the same step that finds the queue
   * empty, so a batch pushed at any later moment starts a new drain (a `.finally()` on the promise
   * would clear it a tick late, stranding a batch pushed in between until the next change).
   */
  private async drain(): Promise<void> {
    try {
      await this.drainQueue();
    } finally {
      this.running = undefined;
    }
  }

  private async drainQueue(): Promise<void> {
    while (this.queue.length > 0) {
      const round: ChangeBatch[] = [];
      let size = 0;
      while (this.queue.length > 0 && size < ROUND_CHANGES) {
        const batch = this.queue.shift()!;
        round.push(batch);
        size += batch.changes.length;
      }
      try {
        await this.dispatch(round.flatMap((b) => b.changes));
      } catch (err) {
        this.deps.log(`realtime: dispatch failed: ${String(err)}`);
        this.deps.onLoss(`${size} changes could not be dispatched`);
      }
      this.queued -= size;
      this.totals.changes += size;
      this.totals.rounds += 1;
      const lsn = round.findLast((b) => b.lsn !== null)?.lsn;
      if (lsn) this.deps.confirm(lsn);
      if (this.queued < LOW_WATER) for (const wake of this.roomWaiters.splice(0)) wake();
      // Let sockets flush and read between rounds: a round without RLS checks awaits nothing
      // real, and a burst would otherwise go out in one go, starving heartbeats and readers.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  private async dispatch(changes: Change[]): Promise<void> {
    const plans: (Planned | Row)[] = [];
    for (const change of changes) {
      const { relation } = change;
      if (relation.schema === 'realtime' && relation.table === 'messages') {
        if (change.type === 'INSERT' && change.tuple) plans.push(this.toRow(change, change.tuple, () => true));
        continue;
      }
      const subscriptions = this.deps.subscriptions.subscriptionsOf(relation.oid);
      if (!subscriptions || subscriptions.size === 0) continue;
      const planned = await this.plan(change, subscriptions);
      if (planned.matches.size > 0) plans.push(planned);
    }
    if (plans.length === 0) return;

    // Which columns each role may select, and which rows each set of claims can see.
    const columnsOf = new Map<string, Set<string>>();
    const visible = new Map<string, Map<Planned, boolean>>();
    const checks = new Map<
      string,
      {
        claims: Claims;
        tables: Map<number, { table: CheckedTable; keys: string[][]; plans: Planned[]; listed: Set<Planned> }>;
      }
    >();
    for (const plan of plans) {
      if (!isPlanned(plan)) continue;
      let lastRole: string | undefined;
      let keySelectable = false;
      for (const { role, claims, claimsKey } of plan.matches.values()) {
        if (role !== lastRole) {
          lastRole = role;
          const columnsKey: string = `${role}\u0000${plan.change.relation.oid}`;
          if (!columnsOf.has(columnsKey))
            columnsOf.set(columnsKey, await this.deps.rowAccess.selectableColumns(role, plan.change.relation.oid));
          const columns = columnsOf.get(columnsKey)!;
          keySelectable = plan.primaryKey.every((k) => columns.has(k));
        }
        if (!plan.rls || !keySelectable) continue;
        let check = checks.get(claimsKey);
        if (!check) checks.set(claimsKey, (check = { claims, tables: new Map() }));
        const relation: Change['relation'] = plan.change.relation;
        let table = check.tables.get(relation.oid);
        if (!table) {
          check.tables.set(
            relation.oid,
            (table = {
              table: { oid: relation.oid, schema: relation.schema, table: relation.table, primaryKey: plan.primaryKey },
              keys: [],
              plans: [],
              listed: new Set(),
            }),
          );
        }
        // Subscribers sharing claims share the lookup: each change is listed once per claims.
        if (!table.listed.has(plan)) {
          table.listed.add(plan);
          table.plans.push(plan);
          table.keys.push(plan.keyText);
        }
      }
    }
    await Promise.all(
      [...checks].map(async ([claimsKey, { claims, tables }]) => {
        const list = [...tables.values()];
        let seen: Set<number>[];
        try {
          seen = await this.visibleWithRecheck(claims, list);
        } catch (err) {
          // A policy that raises for these claims hides the rows from them alone (as Realtime's
          // RlsPolicyError); losing the database fails the round (see drainQueue).
          if (!isPolicyError(err)) throw err;
          this.deps.log(`realtime: RLS lookup failed for role ${claims.role}: ${String(err)}`);
          seen = list.map(() => new Set());
        }
        const byPlan = new Map<Planned, boolean>();
        list.forEach((t, i) => t.plans.forEach((p, j) => byPlan.set(p, seen[i]!.has(j))));
        visible.set(claimsKey, byPlan);
      }),
    );

    let slice = Date.now();
    for (const plan of plans) {
      // Time-sliced: sockets flush and read (and heartbeats get answered) while a round goes out.
      if (Date.now() - slice >= SLICE_MS) {
        await new Promise((resolve) => setImmediate(resolve));
        slice = Date.now();
      }
      if (!isPlanned(plan)) {
        this.broadcastFromDatabase(plan);
        continue;
      }
      // Subscribers of one role with the same matching ids share one payload object, so the
      // sessions encode it once per topic and protocol version (see serializer.encodeShared).
      const byRole = new Map<
        string,
        { columns: Set<string>; keyVisible: boolean; data: Row | undefined; payloads: Map<string, Row> }
      >();
      for (const [subscriber, { ids, role, claimsKey }] of plan.matches) {
        if (!subscriber.open) continue;
        let shape = byRole.get(role);
        if (!shape) {
          const columns = columnsOf.get(`${role}\u0000${plan.change.relation.oid}`)!;
          shape = {
            columns,
            keyVisible: plan.primaryKey.length > 0 && plan.primaryKey.every((k) => columns.has(k)),
            data: undefined,
            payloads: new Map(),
          };
          byRole.set(role, shape);
        }
        if (plan.rls && shape.keyVisible && !visible.get(claimsKey)?.get(plan)) continue;
        shape.data ??= this.payload(plan, shape.columns, shape.keyVisible);
        const idsKey = ids.length === 1 ? String(ids[0]) : ids.join(',');
        let payload = shape.payloads.get(idsKey);
        if (!payload) shape.payloads.set(idsKey, (payload = { ids, data: shape.data }));
        subscriber.send('postgres_changes', payload);
        this.totals.frames += 1;
      }
    }
  }

  /**
   * The RLS lookups of one set of claims, with the rows found invisible looked up once more a
   * moment later: seen here under load, a row of a transaction already decoded (and out of the
   * proc array) was not yet found by the first lookup and was by the second, 30 ms on. A second
   * query per claims per round, only when something was not visible, is cheaper than a lost change.
   */
  private async visibleWithRecheck(
    claims: Claims,
    tables: { table: CheckedTable; keys: string[][] }[],
  ): Promise<Set<number>[]> {
    const seen = await this.deps.rowAccess.visibleRows(claims, tables);
    const missing = tables.map((t, i) => t.keys.flatMap((key, j) => (seen[i]!.has(j) ? [] : [{ key, j }])));
    if (missing.every((m) => m.length === 0)) return seen;
    await new Promise((resolve) => setTimeout(resolve, RECHECK_MS));
    const again = await this.deps.rowAccess.visibleRows(
      claims,
      tables.map((t, i) => ({ table: t.table, keys: missing[i]!.map((m) => m.key) })),
    );
    again.forEach((found, i) => found.forEach((k) => seen[i]!.add(missing[i]![k]!.j)));
    return seen;
  }

  /** Converts a change's values and finds the channels (and their binding ids) that want it. */
  private async plan(change: Change, subscriptions: Iterable<Subscription<Subscriber>>): Promise<Planned> {
    const primaryKey = await change.relation.primaryKey;
    const columns = change.relation.columns;
    const record = change.tuple ? this.toRow(change, change.tuple, () => true) : null;
    let oldRecord: Row | null = null;
    if (change.old) {
      const full = change.old.kind === 'full';
      oldRecord = this.toRow(change, change.old.tuple, (i) => full || columns[i]!.isIdentity);
    } else if (change.type === 'UPDATE' && record) {
      // No old tuple (default replica identity, key unchanged): Realtime's old_record is the key.
      oldRecord = Object.fromEntries(primaryKey.filter((k) => k in record).map((k) => [k, record[k]]));
    }
    const source = change.type === 'DELETE' ? change.old?.tuple : change.tuple;
    const keyText = primaryKey.map((k) => String(source?.[columns.findIndex((c) => c.name === k)] ?? ''));
    const tableRls = await this.deps.rowAccess.hasRowLevelSecurity(change.relation.oid);
    const rls = tableRls && change.type !== 'DELETE' && primaryKey.length > 0;
    const row = change.type === 'DELETE' ? oldRecord : record;
    const matches = new Map<Subscriber, Match>();
    for (const s of subscriptions) {
      if (!s.owner.open) continue;
      if (s.event !== '*' && s.event !== change.type) continue;
      if (s.filter) {
        if (!row || !(s.filter.column in row)) continue;
        if (!passesFilter(row[s.filter.column], s.table.columns.get(s.filter.column) ?? 'text', s.filter)) continue;
      }
      const match = matches.get(s.owner);
      if (match) {
        if (!match.ids.includes(s.id)) match.ids.push(s.id);
      } else {
        matches.set(s.owner, {
          ids: [s.id],
          role: s.owner.claims.role,
          claims: s.owner.claims,
          claimsKey: s.owner.claimsKey,
        });
      }
    }
    return { change, primaryKey, record, oldRecord, keyText, tableRls, rls, matches };
  }

  private toRow(change: Change, tuple: TextTuple, include: (index: number) => boolean): Row {
    const row: Row = {};
    const { columns } = change.relation;
    for (let i = 0; i < columns.length; i++) {
      const value = tuple[i];
      // Unchanged TOASTed values are not in the WAL; Realtime leaves such keys out too.
      if (value === undefined || !include(i)) continue;
      row[columns[i]!.name] = value === null ? null : walValue(value, columns[i]!.typeOid, this.deps.types);
    }
    return row;
  }

  /** The `data` of a postgres_changes frame for a role that may select `columns`. */
  private payload(plan: Planned, columns: Set<string>, keyVisible: boolean): Row {
    const { change } = plan;
    const base = { schema: change.relation.schema, table: change.relation.table, type: change.type };
    if (plan.primaryKey.length === 0 && change.type !== 'DELETE') {
      return {
        ...base,
        commit_timestamp: null,
        columns: [],
        record: {},
        old_record: {},
        errors: ['Error 400: Bad Request, no primary key'],
      };
    }
    if (!keyVisible) {
      return {
        ...base,
        commit_timestamp: null,
        columns: [],
        record: {},
        old_record: {},
        errors: ['Error 401: Unauthorized'],
      };
    }
    const pick = (row: Row | null, keysOnly = false): Row => {
      const out: Row = {};
      for (const [k, v] of Object.entries(row ?? {}))
        if (columns.has(k) && (!keysOnly || plan.primaryKey.includes(k))) out[k] = v;
      return out;
    };
    let record = change.type === 'DELETE' ? null : pick(plan.record);
    // Under RLS a deleted row's old record is its primary key only (realtime.apply_rls).
    let oldRecord = change.type === 'INSERT' ? null : pick(plan.oldRecord, change.type === 'DELETE' && plan.tableRls);
    let errors: string[] | null = null;
    if (JSON.stringify([record, oldRecord]).length > MAX_RECORD_BYTES) {
      errors = ['Error 413: Payload Too Large'];
      const small = (row: Row | null) =>
        row && Object.fromEntries(Object.entries(row).filter(([, v]) => JSON.stringify(v).length <= SMALL_FIELD_BYTES));
      record = small(record);
      oldRecord = small(oldRecord);
    }
    const data: Row = {
      ...base,
      commit_timestamp: commitTimestamp(change.commitTime),
      columns: change.relation.columns
        .filter((c) => columns.has(c.name))
        .map((c) => ({ name: c.name, type: typeName(c.typeOid, this.deps.types) })),
      errors,
    };
    if (record) data['record'] = record;
    if (oldRecord) data['old_record'] = oldRecord;
    return data;
  }

  /** As Realtime's replication connection: rows missing event, topic, id or private are dropped. */
  private broadcastFromDatabase(message: Row): void {
    if (
      [message['event'], message['topic'], message['id'], message['private']].some((v) => v === null || v === undefined)
    )
      return;
    const payload = {
      type: 'broadcast',
      event: message['event'],
      payload: message['payload'],
      meta: { id: message['id'] },
    };
    for (const subscriber of this.deps.audience(`realtime:${String(message['topic'])}`, message['private'] === true)) {
      if (!subscriber.open) continue;
      subscriber.send('broadcast', payload);
      this.totals.frames += 1;
    }
  }
}

function isPlanned(plan: Planned | Row): plan is Planned {
  return (plan as Planned).matches instanceof Map;
}

/** Realtime's commit_timestamp: UTC with milliseconds, `Z` (apply_rls' to_char). */
function commitTimestamp(at: Date): string {
  return at.toISOString();
}
