import type { TransactionSql } from 'postgres';
import type { Quality } from '../parsers/types.ts';
import { QUALITY_CODES } from './arrays.ts';

export interface ReadingInsert {
  sensorId: string;
  ts: Date;
  value: number | null;
  quality: Quality | null;
}

const qualityCode = (q: Quality | null) => (q === null ? null : QUALITY_CODES[q]);
const QUALITY_SQL = `case q when 1 then 'good' when 2 then 'suspect' when 3 then 'bad' end`;

/** Bulk insert; a (sensor, ts) already stored (a QoS 1 redelivery) is skipped, never duplicated. */
export async function insertReadings(tx: TransactionSql, rows: ReadingInsert[]): Promise<number> {
  if (rows.length === 0) return 0;
  const result = await tx`
    insert into sensor_reading (sensor_id, ts, value, quality)
    select id, ts, value, ${tx.unsafe(QUALITY_SQL)}
    from unnest(
      ${rows.map((r) => r.sensorId)}::bigint[], ${rows.map((r) => r.ts.toISOString())}::timestamptz[],
      ${rows.map((r) => r.value)}::float8[], ${rows.map((r) => qualityCode(r.quality))}::int2[]) as v (id, ts, value, q)
    on conflict do nothing`;
  return result.count;
}

/**
 * Sets each sensor's latest value from the newest reading of the batch (one row per sensor, so
 * the per-site broadcast carries one value per sensor per flush). An older reading arriving late
 * does not overwrite a newer value. Returns the ids that exist: a missing one means the sensor was
 * deleted since the writer cached its id.
 */
export async function updateLatestValues(tx: TransactionSql, rows: ReadingInsert[]): Promise<Set<string>> {
  if (rows.length === 0) return new Set();
  const result = await tx<{ id: string }[]>`
    update sensor s set
      last_value = case when s.last_value_at is null or v.ts >= s.last_value_at then v.value else s.last_value end,
      last_quality = case when s.last_value_at is null or v.ts >= s.last_value_at then ${tx.unsafe(QUALITY_SQL)} else s.last_quality end,
      last_value_at = greatest(s.last_value_at, v.ts),
      -- A new value brings an offline sensor back online; a late, older one does not.
      presence = case when s.last_value_at is null or v.ts >= s.last_value_at then 'online' else s.presence end,
      presence_changed_at = case when (s.last_value_at is null or v.ts >= s.last_value_at) and s.presence <> 'online'
                                 then now() else s.presence_changed_at end
    from unnest(
      ${rows.map((r) => r.sensorId)}::bigint[], ${rows.map((r) => r.ts.toISOString())}::timestamptz[],
      ${rows.map((r) => r.value)}::float8[], ${rows.map((r) => qualityCode(r.quality))}::int2[]) as v (id, ts, value, q)
    where s.id = v.id
    returning s.id::text as id`;
  return new Set(result.map((r) => r.id));
}
