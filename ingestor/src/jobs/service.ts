import type { IngestorConfig } from '../config.ts';
import { createDb, type Db } from '../db.ts';
import type { Logger } from '../logger.ts';
import { defaultParserRegistry, type ParserRegistry } from '../parsers/registry.ts';
import { jobContextFromConfig } from './context.ts';
import { startJobWorker, type JobWorker } from './worker.ts';

export interface JobService {
  start(): Promise<void>;
  /** Lets running jobs finish their current step (a replay its batch), then stops. */
  stop(): Promise<void>;
}

/**
 * The job worker as a part of a process: inside the ingestor (BFG_WORKER=true, sharing its pool)
 * or alone (`npm run worker`, `bfg-ingestor worker`).
 */
export function createJobService(
  config: IngestorConfig,
  deps: { sql: Db; registry: ParserRegistry; logger: Logger },
): JobService {
  let worker: JobWorker | undefined;
  let starting: Promise<void> | undefined;
  let stopped = false;
  return {
    start() {
      starting = (async () => {
        const started = await startJobWorker(jobContextFromConfig(config, deps), {
          databaseUrl: config.DATABASE_URL,
          concurrency: config.BFG_WORKER_CONCURRENCY,
        });
        // Stopped while starting (a SIGTERM right after start): do not leave a worker running.
        if (stopped) await started.stop();
        else worker = started;
      })();
      return starting;
    },
    async stop() {
      stopped = true;
      // A start in progress finishes first; it uses the pool, which the caller closes after this.
      await starting?.catch(() => undefined);
      await worker?.stop();
      worker = undefined;
    },
  };
}

/** `bfg-ingestor worker` (`npm run worker`): only the jobs, with a pool of their own; no broker connections. */
export function createWorkerProcess(config: IngestorConfig, logger: Logger): JobService {
  const sql = createDb(config.DATABASE_URL, { max: config.BFG_WORKER_CONCURRENCY + 2 });
  const jobs = createJobService(config, { sql, registry: defaultParserRegistry, logger });
  return {
    start: () => jobs.start(),
    async stop() {
      await jobs.stop();
      await sql.end({ timeout: 5 });
    },
  };
}
