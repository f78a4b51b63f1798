import type { Sql } from 'postgres';
import { parseFilter, type Filter } from './filters.ts';

/** A table of the `supabase_realtime` publication, with its columns' types. */
export interface PublishedTable {
  oid: number;
  schema: string;
  table: string;
  /** Column name → pg_type.typname. */
  columns: Map<string, string>;
  /** Column name → SQL type (format_type), for checking a filter value casts. */
  sqlTypes: Map<string, string>;
}

/** One validated postgres_changes binding on one table: what the dispatcher matches changes against. */
export interface Subscription<Owner> {
  owner: Owner;
  id: number;
  /** `*`, INSERT, UPDATE or DELETE. */
  event: string;
  table: PublishedTable;
  filter: Filter | null;
}

export type SubscribeResult<Owner> =
  { ok: true; subscriptions: Subscription<Owner>[] } | { ok: false; message: string };

const PUBLICATION = 'supabase_realtime';
const EVENTS = new Set(['*', 'INSERT', 'UPDATE', 'DELETE']);

/** Elixir's `inspect` of a JSON value, as Realtime's error messages print client params. */
function inspect(value: unknown): string {
  if (value === null || value === undefined) return 'nil';
  if (typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(inspect).join(', ')}]`;
  if (typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `%{${entries.map(([k, v]) => `${JSON.stringify(k)} => ${inspect(v)}`).join(', ')}}`;
  }
  return typeof value === 'number' || typeof value === 'boolean' ? String(value) : JSON.stringify(value);
}

/** Realtime's `params_to_log`: `[event: *, schema: public, table: t, filters: [...], select: nil]`. */
function paramsToLog(event: string, schema: string, table: string, filter: Filter | null): string {
  const filters = filter
    ? `[{${[filter.column, filter.op, filter.op === 'in' ? `{${filter.values.join(',')}}` : filter.values[0]!].map((v) => JSON.stringify(v)).join(', ')}, false}]`
    : '[]';
  return `[event: ${event}, schema: ${schema}, table: ${table}, filters: ${filters}, select: nil]`;
}

/** Postgrex's `ERROR <sqlstate> (<condition>) <message>` for the errors a subscription can meet. */
const CONDITIONS: Record<string, string> = {
  P0001: 'raise_exception',
  '22P02': 'invalid_text_representation',
  '42704': 'undefined_object',
  '22023': 'invalid_parameter_value',
  '22007': 'invalid_datetime_format',
  '22008': 'datetime_field_overflow',
  '22003': 'numeric_value_out_of_range',
};
const pgError = (code: string, message: string) => `ERROR ${code} (${CONDITIONS[code] ?? 'internal_error'}) ${message}`;

const UNABLE = 'Unable to subscribe to changes with given parameters.';

/**
 * The postgres_changes subscriptions of every channel, indexed by table oid so that a change
 * looks only at the subscriptions of its own table, with filters parsed once at join. Bindings
 * are validated as Realtime validates them when it creates its subscription rows — against the
 * publication and the table's columns, with the subscriber's role — and a bad one fails that
 * channel's subscription alone, with Realtime's `system` error text.
 */
export class SubscriptionIndex<Owner> {
  private readonly byTable = new Map<number, Set<Subscription<Owner>>>();
  private tables: { value: Promise<PublishedTable[]>; at: number } | undefined;
  private readonly sql: Sql;

  constructor(sql: Sql) {
    this.sql = sql;
  }

  subscriptionsOf(oid: number): ReadonlySet<Subscription<Owner>> | undefined {
    return this.byTable.get(oid);
  }

  get size(): number {
    let n = 0;
    for (const set of this.byTable.values()) n += set.size;
    return n;
  }

  /** Tables of the publication (re-read at most every second, so a newly published table is found). */
  private publishedTables(): Promise<PublishedTable[]> {
    if (this.tables && Date.now() - this.tables.at < 1_000) return this.tables.value;
    const value = this.sql<{ oid: number; schema: string; table: string; columns: [string, string, string][] }[]>`
      select c.oid::int as oid, n.nspname as schema, c.relname as table,
             coalesce(json_agg(json_build_array(a.attname, t.typname, format_type(a.atttypid, a.atttypmod)) order by a.attnum)
                      filter (where a.attnum > 0 and not a.attisdropped), '[]') as columns
      from pg_publication_rel pr
      join pg_publication p on p.oid = pr.prpubid and p.pubname = ${PUBLICATION}
      join pg_class c on c.oid = pr.prrelid
      join pg_namespace n on n.oid = c.relnamespace
      left join pg_attribute a on a.attrelid = c.oid
      left join pg_type t on t.oid = a.atttypid
      group by c.oid, n.nspname, c.relname`.then((rows) =>
      rows.map((r) => ({
        oid: r.oid,
        schema: r.schema,
        table: r.table,
        columns: new Map(r.columns.map(([name, type]) => [name, type])),
        sqlTypes: new Map(r.columns.map(([name, , sqlType]) => [name, sqlType])),
      })),
    );
    this.tables = { value, at: Date.now() };
    value.catch(() => (this.tables = undefined));
    return value;
  }

  /**
   * Validates a channel's bindings and, when every one is good, indexes them. One bad binding
   * fails the channel's postgres_changes subscription (as Realtime creates them in one go).
   */
  async subscribe(
    owner: Owner,
    role: string,
    bindings: readonly Record<string, unknown>[],
    ids: readonly number[],
  ): Promise<SubscribeResult<Owner>> {
    // First every binding is parsed (the first malformed one fails them all), as Realtime's
    // parse_subscription_params; then each is matched against the publication and checked like
    // its subscription insert trigger (columns the role may select, values that cast).
    const parsed: { index: number; event: string; schema: string; table: string; filter: Filter | null }[] = [];
    for (const [index, params] of bindings.entries()) {
      const { schema, table, filter } = params;
      // Realtime treats a non-string event as `*`; we refuse it, being at least as strict.
      if (
        typeof params['event'] !== 'string' ||
        (schema !== undefined && typeof schema !== 'string') ||
        (table !== undefined && typeof table !== 'string') ||
        (filter !== undefined && typeof filter !== 'string') ||
        (schema === undefined && table === undefined) ||
        (filter !== undefined && (schema === undefined || table === undefined))
      ) {
        return {
          ok: false,
          message: `No subscription params provided. Please provide at least a \`schema\` or \`table\` to subscribe to: ${inspect(params)}`,
        };
      }
      const f = parseFilter(filter);
      if (f && 'error' in f) return { ok: false, message: `Error parsing \`filter\` params: ${f.error}` };
      const upper = params['event'].toUpperCase();
      parsed.push({
        index,
        event: EVENTS.has(upper) ? upper : '*',
        schema: schema ?? 'public',
        table: table ?? '*',
        filter: f,
      });
    }
    const published = await this.publishedTables();
    const subscriptions: Subscription<Owner>[] = [];
    for (const p of parsed) {
      const log = paramsToLog(p.event, p.schema, p.table, p.filter);
      const tables = published.filter(
        (t) => (p.schema === '*' || t.schema === p.schema) && (p.table === '*' || t.table === p.table),
      );
      if (tables.length === 0) {
        return {
          ok: false,
          message: `${UNABLE} Please check Realtime is enabled for the given connect parameters: ${log}`,
        };
      }
      const exception = (code: string, message: string) => ({
        ok: false as const,
        message: `${UNABLE} An exception happened so please check your connect parameters: ${log}. Exception: ${pgError(code, message)}`,
      });
      const [roleRow] = await this.sql<{ exists: boolean }[]>`select to_regrole(${role}) is not null as exists`;
      if (!roleRow?.exists) return exception('42704', `role "${role}" does not exist`);
      for (const t of tables) {
        if (p.filter) {
          const type = t.sqlTypes.get(p.filter.column);
          const [privilege] = type
            ? await this.sql<
                { ok: boolean }[]
              >`select has_column_privilege(${role}, ${t.oid}::oid, ${p.filter.column}, 'SELECT') as ok`
            : [];
          if (!type || !privilege?.ok) return exception('P0001', `invalid column for filter ${p.filter.column}`);
          const bad = await this.firstUncastable(p.filter.values, type);
          if (bad) return exception(bad.code, bad.message);
        }
        subscriptions.push({ owner, id: ids[p.index]!, event: p.event, table: t, filter: p.filter });
      }
    }
    for (const s of subscriptions) {
      const set = this.byTable.get(s.table.oid) ?? new Set();
      set.add(s);
      this.byTable.set(s.table.oid, set);
    }
    return { ok: true, subscriptions };
  }

  /** Removes a channel's subscriptions. */
  unsubscribe(subscriptions: readonly Subscription<Owner>[]): void {
    for (const s of subscriptions) {
      const set = this.byTable.get(s.table.oid);
      if (!set) continue;
      set.delete(s);
      if (set.size === 0) this.byTable.delete(s.table.oid);
    }
  }

  /** Realtime casts filter values to the column's type when it subscribes; the first that fails. */
  private async firstUncastable(values: string[], type: string): Promise<{ code: string; message: string } | null> {
    for (const value of values) {
      try {
        // unsafe: the type comes from format_type() in the catalog; the value is a parameter.
        await this.sql.unsafe(`select $1::${type}`, [value]);
      } catch (err) {
        const { code, message } = err as { code?: string; message?: string };
        return { code: code ?? 'XX000', message: message ?? String(err) };
      }
    }
    return null;
  }
}
