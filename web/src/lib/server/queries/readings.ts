import type { TransactionSql } from 'postgres';
import { z } from 'zod';

/** Time ranges the chart offers, in seconds. */
export const chartRanges = {
  '15m': 900,
  '1h': 3600,
  '6h': 21_600,
  '24h': 86_400,
  '7d': 604_800,
  '30d': 2_592_000,
} as const;
export type ChartRange = keyof typeof chartRanges;
export const chartRangeSchema = z.enum(Object.keys(chartRanges) as [ChartRange, ...ChartRange[]]);

/** At most this many points go to the browser, whatever the range. */
export const MAX_POINTS = 1500;

export interface ReadingSeries {
  /** Epoch seconds (uPlot's x unit). */
  t: number[];
  avg: (number | null)[];
  min: (number | null)[];
  max: (number | null)[];
  /** Width of one bucket in seconds (1 = raw readings). */
  bucketS: number;
}

/** Width of the rows in sensor_reading_rollup (see its migration). */
export const ROLLUP_S = 300;

/**
 * Readings of a sensor over [from, to), bucketed so the series never exceeds MAX_POINTS: the
 * database aggregates, the browser only draws. Buckets of five minutes or more come from the
 * five-minute rollups (a 30-day range reads 8,640 rows, not 518,400 readings); narrower ones from
 * the readings over the (sensor_id, ts) key. Sparse data stays raw, because a bucket narrower than
 * the reporting interval holds one reading.
 */
export async function loadReadings(tx: TransactionSql, sensorId: number, from: Date, to: Date): Promise<ReadingSeries> {
  const spanS = Math.max(1, (to.getTime() - from.getTime()) / 1000);
  const fine = Math.max(1, Math.ceil(spanS / MAX_POINTS));
  // Rollup buckets are whole multiples of five minutes, so each holds whole rollup rows.
  const bucketS = fine >= ROLLUP_S ? Math.ceil(fine / ROLLUP_S) * ROLLUP_S : fine;
  const rows = await (bucketS >= ROLLUP_S
    ? tx<Row[]>`
      select extract(epoch from date_bin(make_interval(secs => ${bucketS}), bucket, timestamptz 'epoch'))::float8 as t,
             sum(sum) / sum(n) as avg, min(min) as min, max(max) as max
      from public.sensor_reading_rollup
      where sensor_id = ${sensorId} and bucket >= ${from} and bucket < ${to}
      group by 1 order by 1`
    : tx<Row[]>`
      select extract(epoch from date_bin(make_interval(secs => ${bucketS}), ts, ${from}::timestamptz))::float8 as t,
             avg(value) as avg, min(value) as min, max(value) as max
      from public.sensor_reading
      where sensor_id = ${sensorId} and ts >= ${from} and ts < ${to}
      group by 1 order by 1`);
  return {
    t: rows.map((r) => r.t),
    avg: rows.map((r) => r.avg),
    min: rows.map((r) => r.min),
    max: rows.map((r) => r.max),
    bucketS,
  };
}

interface Row {
  t: number;
  avg: number | null;
  min: number | null;
  max: number | null;
}
