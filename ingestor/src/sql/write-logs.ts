import type { TransactionSql } from 'postgres';

/** How many of a failing row's messages came on one topic (within one batch). */
export interface ParsingLogTopicCount {
  topic: string;
  count: number;
  firstSeenAt: Date;
  lastSeenAt: Date;
}

export interface ParsingLogUpsert {
  connectionId: string;
  fingerprint: string;
  /** The topic of the row's last message. */
  topic: string;
  parser: string | null;
  kind: string;
  message: string;
  issuePaths: string[];
  payloadExcerpt: string;
  count: number;
  firstSeenAt: Date;
  lastSeenAt: Date;
  /** Every distinct topic of the row's messages in this batch. */
  topics: ParsingLogTopicCount[];
}

/**
 * Topics listed per mqtt_parsing_log row in mqtt_parsing_log_topic. Enough to show an operator
 * which devices fail and how often; a fleet failing the same way must not grow the log per device.
 */
export const TOPICS_PER_LOG_ROW = 20;

/**
 * One row per distinct error; repeats add to its count (never one row per message). Then the
 * topics behind each row: counted per topic while the row lists fewer than TOPICS_PER_LOG_ROW,
 * added to its `untracked_count` beyond. Both statements run in the batch's transaction, so what
 * is acknowledged is logged. The first statement locks each row it touches until the commit, so
 * concurrent writers of one row take turns and the second sees the first one's topics.
 */
export async function upsertParsingLog(tx: TransactionSql, rows: ParsingLogUpsert[]): Promise<void> {
  if (rows.length === 0) return;
  await tx`
    insert into mqtt_parsing_log as l (connection_id, fingerprint, topic, parser, kind, message, issue_paths, payload_excerpt,
                                       count, first_seen_at, last_seen_at)
    select v.connection_id, v.fingerprint, v.topic, v.parser, v.kind, v.message,
           coalesce((select array_agg(p) from jsonb_array_elements_text(v.issue_paths) p), '{}'),
           v.payload_excerpt, v.count, v.first_seen_at, v.last_seen_at
    from jsonb_to_recordset(${tx.json(
      rows.map((r) => ({
        connection_id: r.connectionId,
        fingerprint: r.fingerprint,
        topic: r.topic,
        parser: r.parser,
        kind: r.kind,
        message: r.message,
        issue_paths: r.issuePaths,
        payload_excerpt: r.payloadExcerpt,
        count: r.count,
        first_seen_at: r.firstSeenAt.toISOString(),
        last_seen_at: r.lastSeenAt.toISOString(),
      })),
    )}) as v (connection_id bigint, fingerprint text, topic text, parser text, kind text, message text,
                 issue_paths jsonb, payload_excerpt text, count bigint, first_seen_at timestamptz, last_seen_at timestamptz)
    on conflict (connection_id, fingerprint) do update set
      count = l.count + excluded.count,
      topic = excluded.topic,
      payload_excerpt = excluded.payload_excerpt,
      last_seen_at = greatest(l.last_seen_at, excluded.last_seen_at)`;

  const topics = rows.flatMap((r) =>
    r.topics.map((t) => ({
      connection_id: r.connectionId,
      fingerprint: r.fingerprint,
      topic: t.topic,
      count: t.count,
      first_seen_at: t.firstSeenAt.toISOString(),
      last_seen_at: t.lastSeenAt.toISOString(),
    })),
  );
  // `listed`: the topic is already in the row's list; `held`: how many the list has (at most the
  // limit, so counting is an index range of a few entries). New topics fill the free places in
  // the order they were first seen; the messages of the others go to untracked_count.
  await tx`
    with v as (
      select l.id as log_id, l.connection_id, t.topic, t.count, t.first_seen_at, t.last_seen_at
      from jsonb_to_recordset(${tx.json(topics)}) as t (connection_id bigint, fingerprint text, topic text, count bigint,
                                                      first_seen_at timestamptz, last_seen_at timestamptz)
      join mqtt_parsing_log l on l.connection_id = t.connection_id and l.fingerprint = t.fingerprint
    ), known as (
      select v.*,
             exists (select 1 from mqtt_parsing_log_topic k where k.parsing_log_id = v.log_id and k.topic = v.topic) as listed,
             (select count(*) from mqtt_parsing_log_topic k where k.parsing_log_id = v.log_id) as held
      from v
    ), placed as (
      select known.*,
             listed or row_number() over (partition by log_id, listed order by first_seen_at, topic) <= ${TOPICS_PER_LOG_ROW} - held as admitted
      from known
    ), written as (
      insert into mqtt_parsing_log_topic as k (parsing_log_id, connection_id, topic, count, first_seen_at, last_seen_at)
      select log_id, connection_id, topic, count, first_seen_at, last_seen_at from placed where admitted
      on conflict (parsing_log_id, topic) do update set
        count = k.count + excluded.count,
        last_seen_at = greatest(k.last_seen_at, excluded.last_seen_at)
    )
    update mqtt_parsing_log l set
      topic_count = l.topic_count + s.new_topics,
      untracked_count = l.untracked_count + s.untracked
    from (select log_id, count(*) filter (where admitted and not listed) as new_topics,
                 coalesce(sum(count) filter (where not admitted), 0) as untracked
          from placed group by log_id) s
    where l.id = s.log_id and (s.new_topics > 0 or s.untracked > 0)`;
}

export interface ArchiveInsert {
  connectionId: string;
  topic: string;
  payload: Buffer;
  qos: number;
  retained: boolean;
  receivedAt: Date;
}

export async function insertArchive(tx: TransactionSql, rows: ArchiveInsert[]): Promise<void> {
  if (rows.length === 0) return;
  const json = rows.map((r) => ({
    connection_id: r.connectionId,
    topic: r.topic,
    payload: r.payload.toString('hex'),
    qos: r.qos,
    retained: r.retained,
    received_at: r.receivedAt.toISOString(),
  }));
  await tx`
    insert into mqtt_message_archive (connection_id, topic, payload, qos, retained, received_at)
    select connection_id, topic, decode(payload, 'hex'), qos, retained, received_at
    from jsonb_to_recordset(${tx.json(json)}) as v (connection_id bigint, topic text, payload text, qos smallint,
                                                 retained boolean, received_at timestamptz)`;
}
