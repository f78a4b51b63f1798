import type { Task } from 'graphile-worker';
import type { JobContext } from '../context.ts';

export const STALENESS_JOB_KEY = 'bfg-staleness';

/**
 * Marks devices that stopped reporting offline (private.mark_stale_devices: gateways after 300 s,
 * dataloggers and sensors after 3 intervals), then schedules its next run in
 * BFG_STALENESS_INTERVAL_S — cron has minutes, this needs seconds. The job key keeps one pending
 * run however many workers start; the write path marks devices online again.
 */
export function createStalenessTask(ctx: JobContext): Task {
  return async (_payload, helpers) => {
    const [changed] = await ctx.sql<{ gateways: string; dataloggers: string; sensors: string }[]>`
      select gateways::text, dataloggers::text, sensors::text from private.mark_stale_devices()`;
    if (changed && (changed.gateways !== '0' || changed.dataloggers !== '0' || changed.sensors !== '0')) {
      helpers.logger.info(
        `offline now: ${changed.gateways} gateway(s), ${changed.dataloggers} datalogger(s), ${changed.sensors} sensor(s)`,
      );
    }
    await scheduleStaleness(helpers, ctx.staleness.intervalS);
  };
}

/** The next run, `delayS` from now (database time), replacing any pending one. */
export async function scheduleStaleness(
  helpers: { query: (text: string, values?: unknown[]) => Promise<unknown> },
  delayS: number,
): Promise<void> {
  await helpers.query(
    `select graphile_worker.add_job('staleness', '{}'::json, run_at := now() + $1 * interval '1 second',
       job_key := $2, job_key_mode := 'replace', max_attempts := 5)`,
    [delayS, STALENESS_JOB_KEY],
  );
}
