import type { TransactionSql } from 'postgres';
import { z } from 'zod';

/** Time ranges the chart offers, in seconds. */
export const chartRanges = { '15m': 900, '1h': 3600, '6h': 21_600, '24h': 86_400, '7d': 604_800, '30d': 2_592_000 } as const;
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

/**
 * Readings of a sensor over [from, to), bucketed so the series never exceeds MAX_POINTS: the
 * database aggregates (date_bin over the (sensor_id, ts) primary key), the browser only draws.
 * Sparse data stays raw because a bucket narrower than the reporting interval holds one reading.
 */
export async function loadReadings(tx: TransactionSql, sensorId: number, from: Date, to: Date): Promise<ReadingSeries> {
  const spanS = Math.max(1, (to.getTime() - from.getTime()) / 1000);
  const bucketS = Math.max(1, Math.ceil(spanS / MAX_POINTS));
  const rows = await tx<{ t: number; avg: number | null; min: number | null; max: number | null }[]>`
    select extract(epoch from date_bin(make_interval(secs => ${bucketS}), ts, ${from}::timestamptz))::float8 as t,
           avg(value) as avg, min(value) as min, max(value) as max
    from public.sensor_reading
    where sensor_id = ${sensorId} and ts >= ${from} and ts < ${to}
    group by 1 order by 1`;
  return {
    t: rows.map((r) => r.t),
    avg: rows.map((r) => r.avg),
    min: rows.map((r) => r.min),
    max: rows.map((r) => r.max),
    bucketS,
  };
}
