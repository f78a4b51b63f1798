import type { TransactionSql } from 'postgres';
import { z } from 'zod';
import { connectionLogRow, parsingLogRow, type ConnectionLogRow, type ParsingLogRow } from '../../rows.ts';
import { MICROSECOND_FORMAT, microsecondTime } from './topics.ts';

/** Where a page of a log ends: the time (created_at / last_seen_at) and id of its last row. */
export const logCursor = z.object({ at: microsecondTime, id: z.coerce.number().int().positive() });
export type LogCursor = z.infer<typeof logCursor>;

export interface LogFilter {
  connectionId: number | null;
  /** Connection log: level; parsing log: kind. Empty = all. */
  category: string;
  search: string;
  limit: number;
  /** Keyset: the page after this row, newest first. */
  before: LogCursor | null;
}

export interface LogPage<T> {
  rows: T[];
  next: LogCursor | null;
}

const like = (s: string) => `%${s.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;

function page<T>(rows: readonly Record<string, unknown>[], schema: z.ZodType<T>, limit: number): LogPage<T> {
  const last = rows[limit - 1];
  return {
    rows: z.array(schema).parse(rows.slice(0, limit)),
    next: rows.length > limit && last ? { at: String(last['cursor_at']), id: Number(last['id']) } : null,
  };
}

// Filters not set are left out of the statements (not `$1 is null or …`), so each combination is
// planned for the (connection_id, time desc) or (time) index, also under a generic plan. The
// cursor is formatted for the page's rows only, after the limit.

export async function listConnectionLog(tx: TransactionSql, f: LogFilter): Promise<LogPage<ConnectionLogRow>> {
  const rows = await tx`
    select l.*, to_char(l.created_at at time zone 'UTC', ${MICROSECOND_FORMAT}) as cursor_at
    from (select * from public.mqtt_connection_log
    where true
      ${f.connectionId !== null ? tx`and connection_id = ${f.connectionId}` : tx``}
      ${f.category !== '' ? tx`and level = ${f.category}` : tx``}
      ${f.search !== '' ? tx`and (detail ilike ${like(f.search)} or event ilike ${like(f.search)})` : tx``}
      ${f.before ? tx`and (created_at, id) < (${f.before.at}::text::timestamptz, ${f.before.id})` : tx``}
    order by created_at desc, id desc
    limit ${f.limit + 1}) l
    order by l.created_at desc, l.id desc`;
  return page(rows, connectionLogRow, f.limit);
}

export async function listParsingLog(tx: TransactionSql, f: LogFilter): Promise<LogPage<ParsingLogRow>> {
  const rows = await tx`
    select l.*, to_char(l.last_seen_at at time zone 'UTC', ${MICROSECOND_FORMAT}) as cursor_at
    from (select * from public.mqtt_parsing_log
    where true
      ${f.connectionId !== null ? tx`and connection_id = ${f.connectionId}` : tx``}
      ${f.category !== '' ? tx`and kind = ${f.category}` : tx``}
      ${f.search !== '' ? tx`and (topic ilike ${like(f.search)} or message ilike ${like(f.search)})` : tx``}
      ${f.before ? tx`and (last_seen_at, id) < (${f.before.at}::text::timestamptz, ${f.before.id})` : tx``}
    order by last_seen_at desc, id desc
    limit ${f.limit + 1}) l
    order by l.last_seen_at desc, l.id desc`;
  return page(rows, parsingLogRow, f.limit);
}
