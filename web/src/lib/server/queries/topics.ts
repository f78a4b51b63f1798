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
  /** Keyset: the page after this topic (the last of the previous page), newest first. */
  after: TopicCursor | null;
}

/**
 * A timestamp as Postgres has it, to the microsecond (a JS Date keeps milliseconds, and a cursor
 * rounded to them would skip the rows within the same millisecond).
 */
export const microsecondTime = z.string().regex(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
/**
 * The SQL giving a timestamptz column in that form. A cursor goes back as `${at}::text::timestamptz`:
 * for a parameter Postgres types as timestamptz, postgres.js would send `new Date(at)`, milliseconds.
 */
export const MICROSECOND_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"';

/** Where a page of discovered topics ends: the order's columns of its last row. */
export const topicCursor = z.object({
  last_seen_at: microsecondTime,
  connection_id: z.coerce.number().int().positive(),
  topic: z.string().max(1024),
});
export type TopicCursor = z.infer<typeof topicCursor>;

/** Counts stop here ("10,000+"): a count that reads every row would cost what the page saves. */
export const TOPIC_COUNT_CAP = 10_000;

const likePattern = (s: string) => `%${s.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;

/**
 * A page of discovered topics, most recently seen first, after `f.after` (keyset: an index range,
 * never an offset), and how many match the filter — exactly up to TOPIC_COUNT_CAP, else
 * `capped`. With 100,000 topics the page reads its rows from discovered_topic_recent_idx /
 * discovered_topic_seen_idx and the count at most TOPIC_COUNT_CAP + 1 index entries.
 */
export async function listDiscoveredTopics(
  tx: TransactionSql,
  f: TopicFilter,
): Promise<{ rows: DiscoveredTopicRow[]; total: number; capped: boolean; next: TopicCursor | null }> {
  const search = f.search === '' ? null : likePattern(f.search);
  const after = f.after;
  // A search goes through private.discovered_topic_search (the trigram index, which RLS keeps a
  // user's ILIKE from using; the function applies the same access rule): it counts the matches,
  // capped, and when they are few it reads the page too; when they are many, the plain filter
  // below finds a page's worth at once.
  let searchCount: number | null = null;
  if (search !== null) {
    const [found] = await tx<{ n: string }[]>`
      select count(*) as n
      from private.discovered_topic_search(${search}, ${f.connectionId}, ${f.processable}, null, null, null, ${TOPIC_COUNT_CAP + 1})`;
    searchCount = Number(found!.n);
  }
  // Filters not set are left out of the statement (not `$1 is null or …`): each combination gets a
  // plan for its index, also when Postgres switches the prepared statement to a generic plan.
  const where = tx`
    true
    ${f.connectionId !== null ? tx`and connection_id = ${f.connectionId}` : tx``}
    ${search !== null ? tx`and topic ilike ${search}` : tx``}
    ${f.processable !== null ? tx`and is_processable = ${f.processable}` : tx``}`;
  const source =
    search !== null && searchCount !== null && searchCount <= TOPIC_COUNT_CAP
      ? tx`select * from private.discovered_topic_search(${search}, ${f.connectionId}, ${f.processable},
             ${after?.last_seen_at ?? null}::text::timestamptz, ${after?.connection_id ?? null}::bigint, ${after?.topic ?? null}::text,
             ${f.limit + 1})`
      : tx`select * from public.discovered_topic
            where ${where}
              ${after ? tx`and (last_seen_at, connection_id, topic) < (${after.last_seen_at}::text::timestamptz, ${after.connection_id}, ${after.topic})` : tx``}
            order by last_seen_at desc, connection_id desc, topic desc
            limit ${f.limit + 1}`;
  const [rows, n] = await Promise.all([
    tx`
      select t.*, to_char(t.last_seen_at at time zone 'UTC', ${MICROSECOND_FORMAT}) as cursor_at
      from (${source}) t
      -- The cursor is formatted for the page's rows only, after the limit.
      order by t.last_seen_at desc, t.connection_id desc, t.topic desc`,
    searchCount ??
      tx<
        { n: string }[]
      >`select count(*) as n from (select 1 from public.discovered_topic where ${where} limit ${TOPIC_COUNT_CAP + 1}) x`.then(
        ([counted]) => Number(counted!.n),
      ),
  ]);
  const parsed = z.array(discoveredTopicRow).parse(rows.slice(0, f.limit));
  const last = parsed.at(-1);
  const lastAt = rows[f.limit - 1]?.['cursor_at'] as string | undefined;
  return {
    rows: parsed,
    total: Math.min(n, TOPIC_COUNT_CAP),
    capped: n > TOPIC_COUNT_CAP,
    next:
      rows.length > f.limit && last && lastAt
        ? { last_seen_at: lastAt, connection_id: last.connection_id, topic: last.topic }
        : null,
  };
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

/** Turns a pattern on or off (the seed's MqttTopic.is_active): off, its topics are discovered but not parsed. */
export async function setTopicPatternActive(
  tx: TransactionSql,
  id: number,
  active: boolean,
): Promise<TopicPatternRow | undefined> {
  const rows = await tx`update public.mqtt_topic set is_active = ${active} where id = ${id} returning *`;
  return rows[0] ? topicPatternRow.parse(rows[0]) : undefined;
}

/**
 * Deletes a pattern (RLS: admins only); its replay record goes with it, and the discovered
 * topics it matched keep their counts but no longer name it (on delete set null).
 */
export async function deleteTopicPattern(tx: TransactionSql, id: number): Promise<TopicPatternRow | undefined> {
  const rows = await tx`delete from public.mqtt_topic where id = ${id} returning *`;
  return rows[0] ? topicPatternRow.parse(rows[0]) : undefined;
}

/**
 * How many discovered topics each pattern is the match of today (discovered_topic.matched_topic_id,
 * which the ingestor writes with every topic it sees), over discovered_topic_matched_idx, each
 * count stopping at TOPIC_COUNT_CAP + 1 (shown as "more than 10,000").
 */
export async function patternTopicCounts(
  tx: TransactionSql,
  patternIds: readonly number[],
): Promise<Map<number, number>> {
  if (patternIds.length === 0) return new Map();
  const rows = await tx<{ id: string; n: string }[]>`
    select p.id, (select count(*) from (select 1 from public.discovered_topic d
                                        where d.matched_topic_id = p.id limit ${TOPIC_COUNT_CAP + 1}) x) as n
    from unnest(${patternIds as number[]}::bigint[]) as p (id)`;
  return new Map(rows.map((r) => [Number(r.id), Number(r.n)]));
}

/** A pattern being typed: what it would match of a connection's discovered topics. */
export interface PatternPreviewQuery {
  connectionId: number;
  pattern: string;
  /** The priority in the form: decides whether it would take a topic from the pattern matching it today. */
  priority: number;
  /** The pattern being edited (null: a new one, whose id will be higher than every other's). */
  patternId: number | null;
  limit: number;
}

const previewGroup = z.object({
  pattern_id: z.coerce.number().int().nullable(),
  pattern: z.string().nullable(),
  parser: z.string().nullable(),
  priority: z.coerce.number().int().nullable(),
  is_active: z.boolean().nullable(),
  n: z.coerce.number().int(),
});
const previewTopic = z.object({
  topic: z.string(),
  matched_topic_id: z.coerce.number().int().nullable(),
  is_processable: z.boolean(),
  message_count: z.coerce.number().int(),
  last_seen_at: z.coerce.date(),
});

export interface PatternPreview {
  /** Discovered topics the pattern matches, up to TOPIC_COUNT_CAP. */
  total: number;
  capped: boolean;
  /** Those topics by the pattern that matches them today (null: none), and whether this one would take them. */
  byCurrent: (z.infer<typeof previewGroup> & { wouldTake: boolean })[];
  /** The first topics (alphabetically). */
  topics: z.infer<typeof previewTopic>[];
}

/**
 * The discovered topics a pattern would match (the same MQTT-filter semantics as the ingestor and
 * archived_message_count: private.mqtt_filter_regex), grouped by the pattern that matches them
 * today, with a sample. As the signed-in user: RLS limits it to the connections they may read.
 * Both queries stop after TOPIC_COUNT_CAP + 1 / `limit` matches; a pattern matching little reads
 * the connection's topics once each.
 */
export async function previewPatternTopics(tx: TransactionSql, q: PatternPreviewQuery): Promise<PatternPreview> {
  // Computed once: in a generic plan the immutable function of a parameter runs once per row.
  const [{ re }] = (await tx`select private.mqtt_filter_regex(${q.pattern}) as re`) as unknown as [{ re: string }];
  const [groups, topics] = await Promise.all([
    tx`
      select m.matched_topic_id as pattern_id, p.pattern, p.parser, p.priority, p.is_active, count(*) as n
      from (select matched_topic_id from public.discovered_topic
            where connection_id = ${q.connectionId} and topic ~ ${re}
            limit ${TOPIC_COUNT_CAP + 1}) m
      left join public.mqtt_topic p on p.id = m.matched_topic_id
      group by 1, 2, 3, 4, 5
      order by n desc`,
    tx`
      select topic, matched_topic_id, is_processable, message_count, last_seen_at from public.discovered_topic
      where connection_id = ${q.connectionId} and topic ~ ${re}
      order by topic
      limit ${q.limit}`,
  ]);
  const parsed = z.array(previewGroup).parse(groups);
  const n = parsed.reduce((sum, g) => sum + g.n, 0);
  // The ingestor's rule: the lowest priority wins, then the lowest id (a new pattern's is the highest).
  const takes = (g: z.infer<typeof previewGroup>) =>
    g.pattern_id === null ||
    g.pattern_id === q.patternId ||
    g.is_active === false ||
    g.priority === null ||
    q.priority < g.priority ||
    (q.priority === g.priority && q.patternId !== null && q.patternId < g.pattern_id);
  return {
    total: Math.min(n, TOPIC_COUNT_CAP),
    capped: n > TOPIC_COUNT_CAP,
    byCurrent: parsed.map((g) => ({ ...g, wouldTake: takes(g) })),
    topics: z.array(previewTopic).parse(topics),
  };
}
