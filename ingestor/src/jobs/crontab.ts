import { parseCronItems, type ParsedCronItem } from 'graphile-worker';

/**
 * Every recurring job, in one place (UTC). graphile-worker schedules each once across all workers.
 * Staleness is not here: it runs every BFG_STALENESS_INTERVAL_S seconds by rescheduling itself.
 */
export const cronItems: ParsedCronItem[] = parseCronItems([
  // Partitions ahead, readings/rollups/logs/archive past retention. Hourly, so the archive's
  // per-connection cap holds within an hour (each run is cheap when there is nothing to do);
  // backfilled for a day, so a worker that was down runs it when it comes back.
  { task: 'retention', match: '17 * * * *', identifier: 'bfg-retention', options: { backfillPeriod: 86_400_000 } },
]);
