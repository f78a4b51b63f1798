import type { IngestorConfig } from '../config.ts';
import type { Db } from '../db.ts';
import type { Logger } from '../logger.ts';
import type { ParserRegistry } from '../parsers/registry.ts';

/** What the tasks share: the ingestor's pool and parsers, and the job settings from the env. */
export interface JobContext {
  sql: Db;
  registry: ParserRegistry;
  logger: Logger;
  /** Archived messages replayed per transaction. */
  batchSize: number;
  maxPayloadBytes: number;
  retention: {
    /** Readings (whole monthly partitions) older than this go; undefined keeps everything. */
    readingDays: number | undefined;
    /** Five-minute rollups older than this go; undefined keeps them (also past readingDays). */
    rollupDays: number | undefined;
    logDays: number;
    archiveDays: number;
    /** Archived messages kept per connection at most, oldest out first. */
    archiveMaxRows: number;
  };
  staleness: { intervalS: number };
  /** Called after each committed replay batch (the benchmark counts with it). */
  onBatch?: (batch: { topicId: string; messages: number; readings: number }) => void;
}

/** The tasks' settings from the ingestor's environment. */
export function jobContextFromConfig(
  config: IngestorConfig,
  deps: { sql: Db; registry: ParserRegistry; logger: Logger },
): JobContext {
  return {
    ...deps,
    batchSize: config.BFG_BACKFILL_BATCH,
    maxPayloadBytes: config.BFG_MAX_PAYLOAD_BYTES,
    retention: {
      readingDays: config.BFG_READING_RETENTION_DAYS,
      rollupDays: config.BFG_ROLLUP_RETENTION_DAYS,
      logDays: config.BFG_LOG_RETENTION_DAYS,
      archiveDays: config.BFG_ARCHIVE_RETENTION_DAYS,
      archiveMaxRows: config.BFG_ARCHIVE_MAX_ROWS,
    },
    staleness: { intervalS: config.BFG_STALENESS_INTERVAL_S },
  };
}
