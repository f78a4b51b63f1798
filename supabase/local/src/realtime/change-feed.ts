import postgres, { type Sql } from 'postgres';
import { backoffDelay } from '@bfg/ingestor';
import type { ChangeType } from './filters.ts';

export interface ColumnInfo {
  name: string;
  type: string;
}

export interface Change {
  schema: string;
  table: string;
  type: ChangeType;
  columns: ColumnInfo[];
  /** Primary key (replica identity) column names. */
  keys: string[];
  record: Record<string, unknown> | null;
  oldRecord: Record<string, unknown> | null;
  commitTimestamp: string;
}

const NUMERIC = new Set(['int2', 'int4', 'int8', 'float4', 'float8', 'numeric', 'oid']);

/**
 * Streams row changes of the given publications over logical replication (pgoutput, through
 * postgres.js' replication client, which re-creates its temporary slot after a reconnect — so, as
 * on Supabase, nothing is replayed after an outage). Values become the JSON Realtime sends
 * (`to_jsonb`-like): numbers for numeric types, ISO strings for timestamps.
 */
export async function startChangeFeed(
  url: string,
  publications: string[],
  onChange: (change: Change) => void,
  onConnect: () => void,
): Promise<{ stop(): Promise<void> }> {
  const typeNames = await loadTypeNames(url);
  const handle = (row: postgres.Row | null, info: postgres.ReplicationEvent) => {
    const relation = info.relation as unknown as { schema: string; table: string; columns: { name: string; type: number }[]; keys: { name: string }[] };
    const columns = relation.columns.map((c) => ({ name: c.name, type: typeNames.get(c.type) ?? 'text' }));
    const toJson = (r: postgres.Row | null | undefined) => (r ? jsonRecord(r, columns) : null);
    const type = info.command.toUpperCase() as ChangeType;
    onChange({
      schema: relation.schema,
      table: relation.table,
      type,
      columns,
      keys: relation.keys.map((k) => k.name),
      record: type === 'DELETE' ? null : toJson(row),
      oldRecord: type === 'DELETE' ? toJson(row) : type === 'UPDATE' ? toJson((info as { old?: postgres.Row | null }).old) : null,
      commitTimestamp: new Date().toISOString(),
    });
  };

  // One replication connection at a time, owned here: when its stream fails (Postgres restarted),
  // it is ended — which also stops postgres.js' own single re-init attempt, which gives up if
  // Postgres is not back yet — and a new one is made with backoff until Postgres accepts it.
  let current: Sql | undefined;
  let stopped = false;
  let attempt = 0;
  let retry: { timer: NodeJS.Timeout; wake: () => void } | undefined;
  const connect = async (): Promise<void> => {
    while (!stopped) {
      const replication: Sql = postgres(url, { publications: publications.join(','), onnotice: () => undefined, max: 1, connect_timeout: 5 } as postgres.Options<Record<string, postgres.PostgresType>>);
      try {
        await replication.subscribe('*', handle, undefined, () => void replace(replication));
        current = replication;
        attempt = 0;
        onConnect();
        return;
      } catch {
        await replication.end({ timeout: 1 }).catch(() => undefined);
        await new Promise<void>((resolve) => {
          const wake = () => {
            clearTimeout(timer);
            retry = undefined;
            resolve();
          };
          const timer = setTimeout(wake, backoffDelay(attempt++, { maxMs: 5_000 }));
          retry = { timer, wake };
        });
      }
    }
  };
  const replace = async (dead: Sql): Promise<void> => {
    if (dead !== current || stopped) return;
    current = undefined;
    await dead.end({ timeout: 1 }).catch(() => undefined);
    await connect();
  };
  await connect();
  return {
    async stop() {
      stopped = true;
      retry?.wake();
      await current?.end({ timeout: 2 }).catch(() => undefined);
    },
  };
}

async function loadTypeNames(url: string): Promise<Map<number, string>> {
  const sql = postgres(url, { max: 1, onnotice: () => undefined });
  try {
    const rows = await sql<{ oid: number; typname: string }[]>`select oid::int as oid, typname from pg_type`;
    return new Map(rows.map((r) => [r.oid, r.typname]));
  } finally {
    await sql.end();
  }
}

function jsonRecord(row: postgres.Row, columns: ColumnInfo[]): Record<string, unknown> {
  const record: Record<string, unknown> = {};
  for (const { name, type } of columns) {
    const value: unknown = row[name];
    // Unchanged TOASTed values are not in the WAL; Realtime leaves such keys out too.
    if (value === undefined) continue;
    record[name] = jsonValue(value, type);
  }
  return record;
}

function jsonValue(value: unknown, type: string): unknown {
  if (value === null) return null;
  if (NUMERIC.has(type) && typeof value === 'string') return Number(value);
  if (value instanceof Date) {
    const iso = value.toISOString();
    if (type === 'timestamptz') return iso.replace('Z', '+00:00');
    if (type === 'date') return iso.slice(0, 10);
    return iso.replace('Z', '');
  }
  return value;
}
