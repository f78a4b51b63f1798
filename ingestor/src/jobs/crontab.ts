import { parseCronItems, type ParsedCronItem } from 'graphile-worker';

/**
 * Every recurring job, in one place (UTC). graphile-worker schedules each once across all workers.
 * Staleness is not here: it runs every BFG_STALENESS_INTERVAL_S seconds by rescheduling itself.
 */
export const cronItems: ParsedCronItem[] = parseCronItems([
  // Partitions ahead, readings/rollups/logs/archive past retention. Backfilled for a day, so a
  // worker that was down at 03:17 runs it when it comes back.
  {
    task: 'retention',
    match: '17 3 * * *',
    identifier: 'bfg-retention-daily',
    options: { backfillPeriod: 86_400_000 },
  },
]);
