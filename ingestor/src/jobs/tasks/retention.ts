import type { Task } from 'graphile-worker';
import type { JobContext } from '../context.ts';

/** Rows deleted per statement when pruning: short transactions, no long locks. */
const PRUNE_BATCH = 5_000;
/** Monthly sensor_reading partitions kept ready ahead of now. */
const PARTITIONS_AHEAD_MONTHS = 3;
const DAY_MS = 86_400_000;

/**
 * Hourly (and at worker start): creates sensor_reading partitions ahead; drops whole partitions past
 * BFG_READING_RETENTION_DAYS (never row by row; the rollups are another table and stay unless
 * BFG_ROLLUP_RETENTION_DAYS says otherwise); prunes the connection log, the parsing log and the
 * archive in batches, oldest first.
 */
export function createRetentionTask(ctx: JobContext): Task {
  return async (_payload, helpers) => {
    const { retention } = ctx;
    const now = Date.now();
    const created = await ctx.sql<{ name: string }[]>`
      select name from private.ensure_sensor_reading_partitions(${PARTITIONS_AHEAD_MONTHS}) as name`;
    if (created.length > 0) helpers.logger.info(`created partitions ${created.map((r) => r.name).join(', ')}`);

    if (retention.readingDays !== undefined) {
      const before = new Date(now - retention.readingDays * DAY_MS);
      const dropped = await ctx.sql<{ name: string }[]>`
        select name from private.drop_sensor_reading_partitions(${before}) as name`;
      if (dropped.length > 0) helpers.logger.info(`dropped partitions ${dropped.map((r) => r.name).join(', ')}`);
    }
    if (retention.rollupDays !== undefined) {
      const before = new Date(now - retention.rollupDays * DAY_MS);
      await pruneUntilDone(() =>
        ctx.sql`
          delete from sensor_reading_rollup r
          using (select sensor_id, bucket from sensor_reading_rollup where bucket < ${before} limit ${PRUNE_BATCH}) old
          where r.sensor_id = old.sensor_id and r.bucket = old.bucket`.then((r) => r.count),
      );
    }
    const pruned = {
      mqtt_connection_log: await prune(ctx, 'mqtt_connection_log', new Date(now - retention.logDays * DAY_MS)),
      mqtt_parsing_log: await prune(ctx, 'mqtt_parsing_log', new Date(now - retention.logDays * DAY_MS)),
      mqtt_message_archive: await prune(
        ctx,
        'mqtt_message_archive',
        new Date(now - retention.archiveDays * DAY_MS),
        retention.archiveMaxRows,
      ),
    };
    helpers.logger.info(`pruned ${JSON.stringify(pruned)}`);
  };
}

function prune(ctx: JobContext, table: string, before: Date, maxRows: number | null = null): Promise<number> {
  return pruneUntilDone(async () => {
    const [row] = await ctx.sql<{ n: string }[]>`
      select private.prune_batch(${table}, ${before}, ${PRUNE_BATCH}, ${maxRows}::integer)::text as n`;
    return Number(row?.n ?? 0);
  });
}

async function pruneUntilDone(batch: () => Promise<number>): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await batch();
    total += n;
    if (n === 0) return total;
  }
}
