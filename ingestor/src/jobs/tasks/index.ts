import type { TaskList } from 'graphile-worker';
import type { JobContext } from '../context.ts';
import { createBackfillTask } from './backfill.ts';
import { createRetentionTask } from './retention.ts';
import { createStalenessTask } from './staleness.ts';

/** Every task, by the identifier jobs name it with (the SQL triggers and the crontab use these). */
export function createTaskList(ctx: JobContext): TaskList {
  return {
    backfill: createBackfillTask(ctx),
    retention: createRetentionTask(ctx),
    staleness: createStalenessTask(ctx),
  };
}
