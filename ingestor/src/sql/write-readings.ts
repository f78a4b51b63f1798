import type { TransactionSql } from 'postgres';
import type { Quality } from '../parsers/types.ts';
import { QUALITY_CODES, arrayLiteral, floatArrayLiteral } from './arrays.ts';

/**
 * Readings of a batch as columns (one entry per reading): no object per reading, and each column
 * goes to Postgres as one array literal. `ts` holds epoch milliseconds: Postgres reads 20,000
 * integers faster than as many ISO timestamps, and Dates carry milliseconds only.
 */
export interface ReadingColumns {
  sensorIds: string[];
  ts: number[];
  /**
   * NaN for NULL (a sensor fault): values are finite otherwise, and an array of numbers only keeps
   * them unboxed (a null among them makes V8 box every value).
   */
  values: number[];
  /** QUALITY_CODES, or null. */
  qualities: (number | null)[];
}

export const emptyReadingColumns = (): ReadingColumns => ({ sensorIds: [], ts: [], values: [], qualities: [] });

export const qualityCode = (q: Quality | null): number | null => (q === null ? null : QUALITY_CODES[q]);
const QUALITY_SQL = `case q when 1 then 'good' when 2 then 'suspect' when 3 then 'bad' end`;
/** Epoch ms to timestamptz, exactly (an integer count of microseconds well inside a double's 2^53). */
const TS_SQL = `timestamptz 'epoch' + ms * interval '1 millisecond'`;

/** SQLSTATE unique_violation. */
const UNIQUE_VIOLATION = '23505';

/**
 * Bulk insert; a (sensor, ts) already stored (a QoS 1 redelivery, a replay) is skipped, never
 * duplicated. Rows must be unique within the call. Tried first as a plain insert, in a savepoint:
 * nearly every batch is new readings only, and `on conflict do nothing` costs ~70 % more in
 * Postgres (a speculative insertion per row). When a stored reading is among them the plain
 * insert fails with a unique violation before storing anything, and the batch's readings go
 * again with `on conflict do nothing`. Returns how many were stored.
 */
export async function insertReadings(tx: TransactionSql, rows: ReadingColumns): Promise<number> {
  if (rows.sensorIds.length === 0) return 0;
  const ids = arrayLiteral(rows.sensorIds);
  const ts = arrayLiteral(rows.ts);
  const values = floatArrayLiteral(rows.values);
  const qualities = arrayLiteral(rows.qualities);
  const insert = (sql: TransactionSql, onConflict: boolean) => sql`
    insert into sensor_reading (sensor_id, ts, value, quality)
    select id, ${sql.unsafe(TS_SQL)}, value, ${sql.unsafe(QUALITY_SQL)}
    from unnest(${ids}::bigint[], ${ts}::int8[], ${values}::float8[], ${qualities}::int2[]) as v (id, ms, value, q)
    ${sql.unsafe(onConflict ? 'on conflict do nothing' : '')}`;
  try {
    return (await tx.savepoint((sp) => insert(sp, false))).count;
  } catch (err) {
    if ((err as { code?: unknown }).code !== UNIQUE_VIOLATION) throw err;
    return (await insert(tx, true)).count;
  }
}

/**
 * Sets each sensor's latest value from the newest reading of the batch (one row per sensor, so
 * the per-site broadcast carries one value per sensor per flush). An older reading arriving late
 * does not overwrite a newer value. Rows in ascending id order, so that two write transactions
 * lock shared sensors in the same order. Returns the ids that exist: a missing one means the
 * sensor was deleted since the writer cached its id.
 */
export async function updateLatestValues(tx: TransactionSql, rows: ReadingColumns): Promise<Set<string>> {
  if (rows.sensorIds.length === 0) return new Set();
  const result = await tx<{ id: string }[]>`
    update sensor s set
      last_value = case when s.last_value_at is null or v.ts >= s.last_value_at then v.value else s.last_value end,
      last_quality = case when s.last_value_at is null or v.ts >= s.last_value_at then ${tx.unsafe(QUALITY_SQL)} else s.last_quality end,
      last_value_at = greatest(s.last_value_at, v.ts),
      -- A new value brings an offline sensor back online; a late, older one does not.
      presence = case when s.last_value_at is null or v.ts >= s.last_value_at then 'online' else s.presence end,
      presence_changed_at = case when (s.last_value_at is null or v.ts >= s.last_value_at) and s.presence <> 'online'
                                 then now() else s.presence_changed_at end
    from (select id, ${tx.unsafe(TS_SQL)} as ts, value, q from unnest(
      ${arrayLiteral(rows.sensorIds)}::bigint[], ${arrayLiteral(rows.ts)}::int8[],
      ${floatArrayLiteral(rows.values)}::float8[], ${arrayLiteral(rows.qualities)}::int2[]) as u (id, ms, value, q)) as v
    where s.id = v.id
    returning s.id::text as id`;
  return new Set(result.map((r) => r.id));
}
