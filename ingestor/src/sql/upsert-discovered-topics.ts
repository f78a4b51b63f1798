import type { Db } from '../db.ts';

export interface DiscoveredTopicUpsert {
  connectionId: string;
  topic: string;
  firstSeenAt: Date;
  lastSeenAt: Date;
  messageCount: number;
  lastPayload: string;
  lastPayloadBytes: number;
  lastQos: number;
  lastRetained: boolean;
  isProcessable: boolean;
  matchedTopicId: string | null;
  lastError: string | null;
}

/** Adds a flush window's aggregates to discovered_topic (counts add up; "last" fields are replaced). */
export async function upsertDiscoveredTopics(sql: Db, rows: DiscoveredTopicUpsert[]): Promise<void> {
  if (rows.length === 0) return;
  const json = rows.map((r) => ({
    connection_id: r.connectionId,
    topic: r.topic,
    first_seen_at: r.firstSeenAt.toISOString(),
    last_seen_at: r.lastSeenAt.toISOString(),
    message_count: r.messageCount,
    last_payload: r.lastPayload,
    last_payload_bytes: r.lastPayloadBytes,
    last_qos: r.lastQos,
    last_retained: r.lastRetained,
    is_processable: r.isProcessable,
    matched_topic_id: r.matchedTopicId,
    last_error: r.lastError,
  }));
  await sql`
    insert into discovered_topic as d (connection_id, topic, first_seen_at, last_seen_at, message_count, last_payload,
                                       last_payload_bytes, last_qos, last_retained, is_processable, matched_topic_id, last_error)
    select v.connection_id, v.topic, v.first_seen_at, v.last_seen_at, v.message_count, v.last_payload, v.last_payload_bytes,
           v.last_qos, v.last_retained, v.is_processable,
           -- A pattern deleted meanwhile is no longer "the match".
           (select t.id from mqtt_topic t where t.id = v.matched_topic_id), v.last_error
    from jsonb_to_recordset(${sql.json(json)}) as v (connection_id bigint, topic text, first_seen_at timestamptz,
           last_seen_at timestamptz, message_count bigint, last_payload text, last_payload_bytes integer, last_qos smallint,
           last_retained boolean, is_processable boolean, matched_topic_id bigint, last_error text)
    -- A connection deleted meanwhile has nothing to keep; skip its topics rather than fail the flush.
    where exists (select 1 from mqtt_connection c where c.id = v.connection_id)
    on conflict (connection_id, topic) do update set
      last_seen_at = greatest(d.last_seen_at, excluded.last_seen_at),
      message_count = d.message_count + excluded.message_count,
      last_payload = excluded.last_payload,
      last_payload_bytes = excluded.last_payload_bytes,
      last_qos = excluded.last_qos,
      last_retained = excluded.last_retained,
      is_processable = excluded.is_processable,
      matched_topic_id = excluded.matched_topic_id,
      last_error = excluded.last_error,
      updated_at = now()`;
}
