import type { Task } from 'graphile-worker';
import { z } from 'zod';
import { processMessage, type ProcessedMessage } from '../../message-pipeline.ts';
import { loadActivePatterns } from '../../sql/connections.ts';
import {
  finishBackfillRun,
  loadBackfillRun,
  msUntilSettled,
  noteBackfillError,
  recordBackfillBatch,
  startBackfillRun,
  takeArchivedBatch,
} from '../../sql/backfill.ts';
import { TopicMatcher } from '../../topic-matcher.ts';
import { newSensorIdCache, writeBatch } from '../../write-batch.ts';
import { coerceError } from '../../errors.ts';
import type { JobContext } from '../context.ts';

const payloadSchema = z.object({ topicId: z.coerce.string().regex(/^\d+$/) });

/**
 * How long after the edit the replay looks once more before it ends. The ingestor's sessions take
 * a new pattern within milliseconds of its NOTIFY, but a message matched (not) against the old
 * patterns just before may still be on its way to the archive in a batch not yet committed; such
 * stragglers are replayed too. One later than this (only behind a write backlog of more than 5 s)
 * stays archived until the pattern is next edited.
 */
const SETTLE_MS = 5_000;

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true });
  });
}

/**
 * Replays the archived messages a pattern now matches, in arrival order and in batches, through
 * the code live messages go through (processMessage with the connection's active patterns, then
 * writeBatch): same parsers, same dedup — a reading already stored, by live ingest or an earlier
 * replay, is not stored twice. Each batch commits its writes, the removal of the messages it
 * consumed and the run's progress together, so a replay killed mid-way resumes where its last
 * batch committed. Live ingest keeps running: batches are short transactions of their own.
 */
export function createBackfillTask(ctx: JobContext): Task {
  return async (rawPayload, helpers) => {
    const { topicId } = payloadSchema.parse(rawPayload);
    const run = await loadBackfillRun(ctx.sql, topicId);
    if (!run || run.state === 'done' || run.state === 'failed') return;
    if (run.state === 'queued') await startBackfillRun(ctx.sql, run);
    // Switched off since it was asked for: nothing to replay into.
    if (!run.isActive) {
      await finishBackfillRun(ctx.sql, topicId, { state: 'done' });
      return;
    }
    const patterns = (await loadActivePatterns(ctx.sql, [run.connectionId])).get(run.connectionId) ?? [];
    const connection = {
      connectionId: run.connectionId,
      siteId: run.siteId,
      siteSlug: run.siteSlug,
      matcher: new TopicMatcher(patterns),
    };

    try {
      let settled = false;
      for (;;) {
        // A shutdown stops between batches; the job fails and is retried, resuming at the cursor.
        if (helpers.abortSignal.aborted) throw new Error('interrupted by shutdown; will resume');
        const more = await ctx.sql.begin(async (tx) => {
          const taken = await takeArchivedBatch(tx, topicId, ctx.batchSize);
          if (!taken || taken.state !== 'running' || taken.messages.length === 0) return false;
          const consumed: ProcessedMessage[] = [];
          const consumedIds: string[] = [];
          for (const message of taken.messages) {
            const processed = processMessage(connection, message, ctx.registry, {
              maxPayloadBytes: ctx.maxPayloadBytes,
              archiveUnmatched: false,
            });
            // No active pattern takes it after all (e.g. one of higher priority was switched off
            // since): it stays archived for a later pattern.
            if (processed.matchedTopicId === null) continue;
            consumed.push(processed);
            consumedIds.push(message.id);
          }
          // A fresh sensor-id cache per batch: nothing cached can have gone stale.
          const stats = await writeBatch(tx, consumed, newSensorIdCache());
          await recordBackfillBatch(tx, topicId, {
            consumedIds,
            cursorId: taken.messages.at(-1)!.id,
            processed: consumed.length,
            failed: consumed.filter((m) => m.failure !== null).length,
            readings: stats.inserted,
          });
          ctx.onBatch?.({ topicId, messages: consumed.length, readings: stats.inserted });
          return true;
        });
        if (more) continue;
        if (settled) break;
        settled = true;
        const wait = await msUntilSettled(ctx.sql, topicId, SETTLE_MS);
        if (wait > 0) await delay(wait, helpers.abortSignal);
      }
    } catch (err) {
      const error = coerceError(err);
      const finalAttempt = helpers.job.attempts >= helpers.job.max_attempts;
      if (finalAttempt) await finishBackfillRun(ctx.sql, topicId, { state: 'failed', error: error.message });
      else await noteBackfillError(ctx.sql, topicId, error.message);
      throw error;
    }
    await finishBackfillRun(ctx.sql, topicId, { state: 'done' });
    helpers.logger.info(`backfill of pattern ${topicId} done`);
  };
}
