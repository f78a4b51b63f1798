import type { TransactionSql } from 'postgres';

export interface ParsingLogUpsert {
  connectionId: string;
  fingerprint: string;
  topic: string;
  parser: string | null;
  kind: string;
  message: string;
  issuePaths: string[];
  payloadExcerpt: string;
  count: number;
  firstSeenAt: Date;
  lastSeenAt: Date;
}

/** One row per distinct error; repeats add to its count (never one row per message). */
export async function upsertParsingLog(tx: TransactionSql, rows: ParsingLogUpsert[]): Promise<void> {
  if (rows.length === 0) return;
  await tx`
    insert into mqtt_parsing_log as l (connection_id, fingerprint, topic, parser, kind, message, issue_paths, payload_excerpt,
                                       count, first_seen_at, last_seen_at)
    select v.connection_id, v.fingerprint, v.topic, v.parser, v.kind, v.message,
           coalesce((select array_agg(p) from jsonb_array_elements_text(v.issue_paths) p), '{}'),
           v.payload_excerpt, v.count, v.first_seen_at, v.last_seen_at
    from jsonb_to_recordset(${tx.json(rows.map((r) => ({
      connection_id: r.connectionId, fingerprint: r.fingerprint, topic: r.topic, parser: r.parser, kind: r.kind,
      message: r.message, issue_paths: r.issuePaths, payload_excerpt: r.payloadExcerpt, count: r.count,
      first_seen_at: r.firstSeenAt.toISOString(), last_seen_at: r.lastSeenAt.toISOString(),
    })))}) as v (connection_id bigint, fingerprint text, topic text, parser text, kind text, message text,
                 issue_paths jsonb, payload_excerpt text, count bigint, first_seen_at timestamptz, last_seen_at timestamptz)
    on conflict (connection_id, fingerprint) do update set
      count = l.count + excluded.count,
      topic = excluded.topic,
      payload_excerpt = excluded.payload_excerpt,
      last_seen_at = greatest(l.last_seen_at, excluded.last_seen_at)`;
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
    connection_id: r.connectionId, topic: r.topic, payload: r.payload.toString('hex'), qos: r.qos, retained: r.retained,
    received_at: r.receivedAt.toISOString(),
  }));
  await tx`
    insert into mqtt_message_archive (connection_id, topic, payload, qos, retained, received_at)
    select connection_id, topic, decode(payload, 'hex'), qos, retained, received_at
    from jsonb_to_recordset(${tx.json(json)}) as v (connection_id bigint, topic text, payload text, qos smallint,
                                                 retained boolean, received_at timestamptz)`;
}
