import type { TransactionSql } from 'postgres';
import { z } from 'zod';
import { ROLLUP_S } from './readings.ts';

/** What a sparkline draws: x in epoch seconds, y the bucket's average or null (uPlot's data layout). */
export interface Sparkline {
  t: number[];
  v: (number | null)[];
}

/** The window a sparkline shows. */
export const SPARKLINE_S = 3600;

const row = z.object({
  sensor_id: z.coerce.number().int(),
  t: z.array(z.coerce.number()),
  v: z.array(z.coerce.number()),
});

/**
 * The last hour of every sensor of a site, in one query: the five-minute rollups (12 rows per
 * sensor, over the rollup's (sensor_id, bucket) key), one row per sensor with its points as
 * arrays — 1,000 sensors are 1,000 rows, not 12,000. Keyed by sensor id; sensors without a value
 * in the hour are missing. As the user (RLS on the rollups: members of the site, admins).
 */
export async function loadSiteSparklines(tx: TransactionSql, siteId: number): Promise<Record<number, Sparkline>> {
  const rows = await tx`
    select r.sensor_id,
           array_agg(extract(epoch from r.bucket)::float8 + ${ROLLUP_S / 2} order by r.bucket) as t,
           array_agg(r.sum / r.n order by r.bucket) as v
    from public.sensor_reading_rollup r
    where r.sensor_id in (select s.id from public.sensor s where s.site_id = ${siteId})
      and r.bucket >= now() - make_interval(secs => ${SPARKLINE_S})
    group by r.sensor_id`;
  const parsed = z.array(row).parse(rows);
  // Every line on one time axis (the rollups' five-minute grid), the very same array: the page's
  // data is serialized with references, so 1,000 sensors send their times once, not 1,000 times.
  const grid = [...new Set(parsed.flatMap((r) => r.t))].sort((a, b) => a - b);
  const at = new Map(grid.map((t, i) => [t, i]));
  const lines: Record<number, Sparkline> = {};
  for (const r of parsed) {
    const v: (number | null)[] = grid.map(() => null);
    // Four significant digits are more than 28 pixels of height can show (and serialize short).
    r.t.forEach((t, i) => (v[at.get(t)!] = Number(r.v[i]!.toPrecision(4))));
    lines[r.sensor_id] = { t: grid, v };
  }
  return lines;
}
