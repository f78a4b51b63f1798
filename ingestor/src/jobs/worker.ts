import { Logger as GraphileLogger, run, type Runner } from 'graphile-worker';
import { coerceError } from '../errors.ts';
import { enqueueUnfinishedBackfills } from '../sql/backfill.ts';
import type { JobContext } from './context.ts';
import { cronItems } from './crontab.ts';
import { createTaskList } from './tasks/index.ts';
import { scheduleStaleness, STALENESS_JOB_KEY } from './tasks/staleness.ts';

export interface JobWorkerOptions {
  /** Postgres, directly (graphile-worker LISTENs): the ingestor's DATABASE_URL. */
  databaseUrl: string;
  /** Jobs run at once by this process. */
  concurrency: number;
}

export interface JobWorker {
  /** Stops taking jobs and waits for running ones (a replay stops after its current batch). */
  stop(): Promise<void>;
}

/**
 * Runs graphile-worker with BFG's tasks and crontab. At start graphile-worker installs or upgrades
 * its own schema (graphile_worker; the role needs CREATE on the database, as the `postgres` role of
 * Supabase has), then this enqueues what SQL could not: replays requested before the schema existed
 * or left by a worker that died, the first staleness run and a retention run (partitions ahead).
 * A failing job is retried with graphile-worker's exponential backoff (exp(attempt) seconds, capped);
 * its last error is in graphile_worker.jobs (public.worker_jobs() for admins) and, for replays, in
 * backfill_run.last_error. A job that fails for good is logged at level error, which Sentry reports
 * when SENTRY_DSN is set.
 */
export async function startJobWorker(ctx: JobContext, options: JobWorkerOptions): Promise<JobWorker> {
  const log = ctx.logger.child({ component: 'jobs' });
  const runner: Runner = await run({
    connectionString: options.databaseUrl,
    concurrency: options.concurrency,
    // The ingestor owns SIGTERM/SIGINT: it stops the worker as part of its own shutdown.
    noHandleSignals: true,
    pollInterval: 2_000,
    // On stop, tell running jobs at once (a replay then stops after its current batch, to resume).
    gracefulShutdownAbortTimeout: 100,
    taskList: createTaskList(ctx),
    parsedCronItems: cronItems,
    logger: new GraphileLogger((scope) => (level, message, meta) => {
      const fields = { ...scope, ...meta };
      if (level === 'error') log.error(fields, message);
      else if (level === 'warning') log.warn(fields, message);
      else if (level === 'info') log.debug(fields, message);
      else log.trace(fields, message);
    }),
  });
  runner.events.on('job:error', ({ job, error }) => {
    const err = coerceError(error);
    const context = { task: job.task_identifier, jobId: job.id, attempt: job.attempts, maxAttempts: job.max_attempts };
    log.warn({ ...context, err }, `job ${job.task_identifier} failed; retried with backoff`);
  });
  runner.events.on('job:failed', ({ job, error }) => {
    const err = coerceError(error);
    const context = { task: job.task_identifier, jobId: job.id, attempts: job.attempts };
    log.error({ ...context, err }, `job ${job.task_identifier} failed for good after ${job.attempts} attempts`);
  });
  runner.events.on('worker:fatalError', ({ error }) => {
    const err = coerceError(error);
    log.error({ err }, 'job worker failed');
  });

  try {
    const resumed = await enqueueUnfinishedBackfills(ctx.sql);
    if (resumed > 0) log.info({ resumed }, 'enqueued unfinished replays');
    await ctx.sql`
      select graphile_worker.add_job('retention', '{}'::json, job_key := 'bfg-retention-start', max_attempts := 5)`;
    // Only when none is pending: a restart must not push the next run further out.
    const [pending] = await ctx.sql<{ n: number }[]>`
      select count(*)::int as n from graphile_worker.jobs where key = ${STALENESS_JOB_KEY}`;
    if (!pending?.n) await scheduleStaleness({ query: (text, values) => ctx.sql.unsafe(text, values as never[]) }, 0);
  } catch (err) {
    await runner.stop();
    throw err;
  }
  log.info({ concurrency: options.concurrency }, 'job worker running');
  return {
    async stop() {
      await runner.stop();
      await runner.promise.catch(() => undefined);
    },
  };
}
