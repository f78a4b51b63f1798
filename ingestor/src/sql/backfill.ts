import type { TransactionSql } from 'postgres';
import type { Db } from '../db.ts';
import type { BackfillState } from '../vocabulary.ts';

/** A pattern's replay as backfill_run holds it. */
export interface BackfillRun {
  topicId: string;
  connectionId: string;
  siteId: string;
  siteSlug: string;
  pattern: string;
  isActive: boolean;
  state: BackfillState;
  cursorId: string;
}

export interface ArchivedMessage {
  id: string;
  topic: string;
  payload: Buffer;
  qos: 0 | 1 | 2;
  retained: boolean;
  receivedAt: Date;
}

/** The run of `topicId` with its pattern and site, or undefined when the pattern is gone. */
export async function loadBackfillRun(sql: Db, topicId: string): Promise<BackfillRun | undefined> {
  const [row] = await sql<BackfillRun[]>`
    select r.topic_id::text as "topicId", t.connection_id::text as "connectionId", c.site_id::text as "siteId",
           s.slug as "siteSlug", t.pattern, t.is_active as "isActive", r.state, r.cursor_id::text as "cursorId"
    from backfill_run r
    join mqtt_topic t on t.id = r.topic_id
    join mqtt_connection c on c.id = t.connection_id
    join site s on s.id = c.site_id
    where r.topic_id = ${topicId}`;
  return row;
}

/** A queued run starts: what its pattern matches in the archive now is the work to do. */
export async function startBackfillRun(sql: Db, run: BackfillRun): Promise<void> {
  await sql`
    update backfill_run set
      state = 'running', started_at = now(), updated_at = now(),
      matched = (select count(*) from mqtt_message_archive
                 where connection_id = ${run.connectionId} and id > ${run.cursorId}
                   and topic ~ private.mqtt_filter_regex(${run.pattern}))
    where topic_id = ${run.topicId}`;
}

/**
 * The next archived messages of the run's connection that its pattern matches, after the run's
 * committed cursor, in arrival order. Locks the run row for this transaction (a second job of the
 * same pattern waits and then continues from where this one committed) and the messages, skipping
 * ones another replay holds.
 */
export async function takeArchivedBatch(
  tx: TransactionSql,
  topicId: string,
  limit: number,
): Promise<{ cursorId: string; pattern: string; state: string; messages: ArchivedMessage[] } | undefined> {
  const [run] = await tx<{ cursorId: string; pattern: string; connectionId: string; state: string }[]>`
    select r.cursor_id::text as "cursorId", t.pattern, t.connection_id::text as "connectionId", r.state
    from backfill_run r join mqtt_topic t on t.id = r.topic_id
    where r.topic_id = ${topicId}
    for update of r`;
  if (!run) return undefined;
  const messages = await tx<ArchivedMessage[]>`
    select a.id::text as id, a.topic, a.payload, a.qos, a.retained, a.received_at as "receivedAt"
    from mqtt_message_archive a
    where a.connection_id = ${run.connectionId} and a.id > ${run.cursorId}
      and a.topic ~ private.mqtt_filter_regex(${run.pattern})
    -- a.id, the bigint: a bare \`id\` would be the text output column, ordered as text.
    order by a.id
    limit ${limit}
    for update skip locked`;
  return { cursorId: run.cursorId, pattern: run.pattern, state: run.state, messages };
}

/** Removes what a batch consumed and moves the run on, in the batch's transaction. */
export async function recordBackfillBatch(
  tx: TransactionSql,
  topicId: string,
  batch: { consumedIds: string[]; cursorId: string; processed: number; failed: number; readings: number },
): Promise<void> {
  if (batch.consumedIds.length > 0) {
    await tx`delete from mqtt_message_archive where id = any(${batch.consumedIds}::bigint[])`;
  }
  await tx`
    update backfill_run set
      cursor_id = greatest(cursor_id, ${batch.cursorId}::bigint),
      -- Messages archived after the run started (see SETTLE_MS in the task) are matched too.
      matched = greatest(matched, processed + ${batch.processed}),
      processed = processed + ${batch.processed},
      failed = failed + ${batch.failed},
      readings = readings + ${batch.readings},
      updated_at = now()
    where topic_id = ${topicId}`;
}

/**
 * Ends a running run. A run that was asked for again meanwhile (reset to queued by an edit) is left
 * to the job that edit enqueued.
 */
export async function finishBackfillRun(
  sql: Db,
  topicId: string,
  outcome: { state: 'done' | 'failed'; error?: string },
): Promise<void> {
  await sql`
    update backfill_run set
      state = ${outcome.state}, last_error = ${outcome.error?.slice(0, 4000) ?? null},
      finished_at = case when ${outcome.state} = 'done' then now() else finished_at end, updated_at = now()
    where topic_id = ${topicId} and state = 'running'`;
}

/** Error of an attempt that will be retried: visible on the run while it waits. */
export async function noteBackfillError(sql: Db, topicId: string, error: string): Promise<void> {
  await sql`update backfill_run set last_error = ${error.slice(0, 4000)}, updated_at = now() where topic_id = ${topicId}`;
}

/**
 * Enqueues a job for every run still queued or running (requested before graphile-worker was
 * installed, or left by a worker that died): the job key makes this a no-op for runs that have a
 * pending job, and supersedes a job a dead worker still holds locked. Returns how many.
 */
export async function enqueueUnfinishedBackfills(sql: Db): Promise<number> {
  const rows = await sql`
    select graphile_worker.add_job(
      'backfill', json_build_object('topicId', r.topic_id),
      job_key := 'bfg-backfill-' || r.topic_id, job_key_mode := 'replace', max_attempts := 10)
    from backfill_run r
    where r.state in ('queued', 'running')`;
  return rows.count;
}

/** Milliseconds until `settleMs` have passed since the run was asked for (database time), at least 0. */
export async function msUntilSettled(sql: Db, topicId: string, settleMs: number): Promise<number> {
  const [row] = await sql<{ ms: number }[]>`
    select greatest(0, ceil(extract(epoch from requested_at - now()) * 1000 + ${settleMs}))::int as ms
    from backfill_run where topic_id = ${topicId}`;
  return row?.ms ?? 0;
}
