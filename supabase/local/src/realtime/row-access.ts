import type { Sql } from 'postgres';
import type { Claims } from './jwt.ts';

const ROLLBACK = Symbol('rollback');
/** Catalog facts (RLS on/off, column privileges, column types) are re-read after this long. */
const CATALOG_TTL_MS = 5_000;

const quoteIdent = (name: string) => `"${name.replaceAll('"', '""')}"`;

interface Cached<T> {
  value: Promise<T>;
  at: number;
}

/** A table whose rows are checked: its oid, qualified name and primary key. */
export interface CheckedTable {
  oid: number;
  schema: string;
  table: string;
  primaryKey: string[];
}

/**
 * What a subscriber's role may see of a table, checked the way Supabase Realtime checks it
 * (realtime.apply_rls): the columns it may SELECT (column privileges), and for tables with row
 * level security, whether its role and claims can read a changed row — looked up by primary key
 * against the table's current state. Row checks are batched: one transaction per distinct set
 * of claims, one query per table, however many changes and subscribers share them.
 */
export class RowAccess {
  private readonly rls = new Map<number, Cached<boolean>>();
  private readonly columns = new Map<string, Cached<Set<string>>>();
  private readonly sqlTypes = new Map<number, Cached<Map<string, string>>>();
  private readonly sql: Sql;

  constructor(sql: Sql) {
    this.sql = sql;
  }

  private cached<K, T>(map: Map<K, Cached<T>>, key: K, load: () => Promise<T>): Promise<T> {
    const hit = map.get(key);
    if (hit && Date.now() - hit.at < CATALOG_TTL_MS) return hit.value;
    const value = load();
    map.set(key, { value, at: Date.now() });
    value.catch(() => map.delete(key));
    return value;
  }

  hasRowLevelSecurity(oid: number): Promise<boolean> {
    return this.cached(this.rls, oid, async () => {
      const [row] = await this.sql<{ rls: boolean }[]>`select relrowsecurity as rls from pg_class where oid = ${oid}`;
      return row?.rls ?? true;
    });
  }

  /** Columns of the table the role may SELECT (table or column privilege). */
  selectableColumns(role: string, oid: number): Promise<Set<string>> {
    return this.cached(this.columns, `${role}\u0000${oid}`, async () => {
      const rows = await this.sql<{ name: string }[]>`
        select a.attname as name from pg_attribute a
        where a.attrelid = ${oid} and a.attnum > 0 and not a.attisdropped
          and has_column_privilege(${role}, a.attrelid, a.attnum, 'SELECT')`;
      return new Set(rows.map((r) => r.name));
    });
  }

  private columnSqlTypes(oid: number): Promise<Map<string, string>> {
    return this.cached(this.sqlTypes, oid, async () => {
      const rows = await this.sql<{ name: string; type: string }[]>`
        select a.attname as name, format_type(a.atttypid, a.atttypmod) as type from pg_attribute a
        where a.attrelid = ${oid} and a.attnum > 0 and not a.attisdropped`;
      return new Map(rows.map((r) => [r.name, r.type]));
    });
  }

  /**
   * For one set of claims: which of the given rows (primary key values, as text) its role can
   * read now. Returns, per table in `checks`, the indexes of the visible keys.
   */
  async visibleRows(claims: Claims, checks: { table: CheckedTable; keys: string[][] }[]): Promise<Set<number>[]> {
    const statements = await Promise.all(
      checks.map(async ({ table }) => {
        const types = await this.columnSqlTypes(table.oid);
        const conditions = table.primaryKey.map((column, i) => {
          const type = types.get(column) ?? 'text';
          // format_type() output is valid SQL type syntax; the column name is quoted.
          return `r.${quoteIdent(column)} = (x.v->>${i})::${type}`;
        });
        return `select (x.i - 1)::int as i from jsonb_array_elements($1::text::jsonb) with ordinality as x(v, i)
              where exists (select 1 from ${quoteIdent(table.schema)}.${quoteIdent(table.table)} r where ${conditions.join(' and ')})`;
      }),
    );
    let result: Set<number>[] = checks.map(() => new Set());
    try {
      await this.sql.begin(async (tx) => {
        await tx`select set_config('role', ${claims.role}, true), set_config('request.jwt.claims', ${JSON.stringify(claims)}, true)`;
        // unsafe: identifiers come from the catalog and are quoted; the keys are one JSON parameter.
        // Pipelined on the transaction's connection. Callers check first that the role may
        // select the key columns, so a permission error cannot abort the others.
        const rows = await Promise.all(
          statements.map((text, i) => tx.unsafe<{ i: number }[]>(text, [JSON.stringify(checks[i]!.keys)])),
        );
        result = rows.map((r) => new Set(r.map((x) => x.i)));
        throw ROLLBACK;
      });
    } catch (err) {
      if (err !== ROLLBACK) throw err;
    }
    return result;
  }

  /** Whether a role of that name exists (a JWT's `role` claim must name one). */
  async roleExists(role: string): Promise<boolean> {
    const [row] = await this.sql<{ exists: boolean }[]>`select to_regrole(${role}) is not null as exists`;
    return row?.exists === true;
  }
}
