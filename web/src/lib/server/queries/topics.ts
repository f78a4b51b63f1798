import type { TransactionSql } from 'postgres';
import { z } from 'zod';
import {
  backfillRunRow,
  discoveredTopicRow,
  topicPatternRow,
  type BackfillRunRow,
  type DiscoveredTopicRow,
  type TopicPatternRow,
} from '../../rows.ts';

export interface TopicFilter {
  connectionId: number | null;
  /** Substring of the topic, case-insensitive. */
  search: string;
  processable: boolean | null;
  limit: number;
}

/** Discovered topics, most recently seen first. */
export async function listDiscoveredTopics(
  tx: TransactionSql,
  f: TopicFilter,
): Promise<{ rows: DiscoveredTopicRow[]; total: number }> {
  const pattern = `%${f.search.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
  const rows = await tx`
    select *, count(*) over () as total
    from public.discovered_topic
    where (${f.connectionId}::bigint is null or connection_id = ${f.connectionId})
      and (${f.search} = '' or topic ilike ${pattern})
      and (${f.processable}::boolean is null or is_processable = ${f.processable})
    order by last_seen_at desc, topic
    limit ${f.limit}`;
  return { rows: z.array(discoveredTopicRow).parse(rows), total: Number(rows[0]?.['total'] ?? 0) };
}

export async function listTopicPatterns(tx: TransactionSql): Promise<TopicPatternRow[]> {
  const rows = await tx`select * from public.mqtt_topic order by connection_id, priority, id`;
  return z.array(topicPatternRow).parse(rows);
}

export interface NewTopicPattern {
  connection_id: number;
  pattern: string;
  parser: string;
  qos: number;
  priority: number;
  /** Validated against the parser's config schema before it gets here. */
  parser_config: Record<string, unknown>;
}

/**
 * Adds a pattern; the ingestor picks it up through mqtt_topic:changed, and a trigger asks for a
 * replay of the archived messages it matches (backfill_run).
 */
export async function createTopicPattern(tx: TransactionSql, p: NewTopicPattern): Promise<TopicPatternRow> {
  const rows = await tx`
    insert into public.mqtt_topic (connection_id, pattern, parser, qos, priority, parser_config)
    values (${p.connection_id}, ${p.pattern}, ${p.parser}, ${p.qos}, ${p.priority}, ${tx.json(p.parser_config as Parameters<typeof tx.json>[0])})
    returning *`;
  return topicPatternRow.parse(rows[0]);
}

export type TopicPatternChange = Omit<NewTopicPattern, 'connection_id'> & { is_active: boolean };

/**
 * Changes a pattern (RLS: admins only). Activating it or changing its pattern, parser or options
 * asks for a replay, as an edit in Studio does (the trigger on mqtt_topic). undefined when the
 * pattern is not there (deleted meanwhile, or not visible to the user).
 */
export async function updateTopicPattern(
  tx: TransactionSql,
  id: number,
  p: TopicPatternChange,
): Promise<TopicPatternRow | undefined> {
  const rows = await tx`
    update public.mqtt_topic set
      pattern = ${p.pattern}, parser = ${p.parser}, qos = ${p.qos}, priority = ${p.priority},
      parser_config = ${tx.json(p.parser_config as Parameters<typeof tx.json>[0])}, is_active = ${p.is_active}
    where id = ${id}
    returning *`;
  return rows[0] ? topicPatternRow.parse(rows[0]) : undefined;
}

/** Each visible pattern's last replay of archived messages (RLS: members see their connections'). */
export async function listBackfillRuns(tx: TransactionSql): Promise<BackfillRunRow[]> {
  const rows = await tx`select * from public.backfill_run order by topic_id`;
  return z.array(backfillRunRow).parse(rows);
}

/**
 * How many archived messages of a connection `pattern` matches, i.e. what saving it active would
 * replay. The database refuses anyone but admins (SQLSTATE 42501).
 */
export async function archivedMessageCount(tx: TransactionSql, connectionId: number, pattern: string): Promise<number> {
  const [row] = await tx<{ n: string }[]>`select public.archived_message_count(${connectionId}, ${pattern}) as n`;
  return Number(row!.n);
}
