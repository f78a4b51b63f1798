import type { TransactionSql } from 'postgres';
import { z } from 'zod';

/** A pending or failing graphile-worker job, as public.worker_jobs() shows it to admins. */
export const workerJobRow = z.object({
  id: z.coerce.number().int(),
  task_identifier: z.string(),
  queue_name: z.string().nullable(),
  run_at: z.coerce.date(),
  attempts: z.coerce.number().int(),
  max_attempts: z.coerce.number().int(),
  last_error: z.string().nullable(),
  key: z.string().nullable(),
  locked_at: z.coerce.date().nullable(),
  created_at: z.coerce.date(),
  updated_at: z.coerce.date(),
});
export type WorkerJobRow = z.infer<typeof workerJobRow>;

/**
 * Background jobs waiting, running or failing (a job that succeeded is gone). Empty for anyone but
 * admins, and before a worker has installed graphile-worker's schema.
 */
export async function listWorkerJobs(tx: TransactionSql): Promise<WorkerJobRow[]> {
  const rows = await tx`select * from public.worker_jobs()`;
  return z.array(workerJobRow).parse(rows);
}
