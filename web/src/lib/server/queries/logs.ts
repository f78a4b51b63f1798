import type { TransactionSql } from 'postgres';
import { z } from 'zod';
import { connectionLogRow, parsingLogRow, type ConnectionLogRow, type ParsingLogRow } from '../../rows.ts';

export interface LogFilter {
  connectionId: number | null;
  /** Connection log: level; parsing log: kind. Empty = all. */
  category: string;
  search: string;
  limit: number;
}

const like = (s: string) => `%${s.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;

export async function listConnectionLog(tx: TransactionSql, f: LogFilter): Promise<ConnectionLogRow[]> {
  const rows = await tx`
    select * from public.mqtt_connection_log
    where (${f.connectionId}::bigint is null or connection_id = ${f.connectionId})
      and (${f.category} = '' or level = ${f.category})
      and (${f.search} = '' or detail ilike ${like(f.search)} or event ilike ${like(f.search)})
    order by created_at desc, id desc
    limit ${f.limit}`;
  return z.array(connectionLogRow).parse(rows);
}

export async function listParsingLog(tx: TransactionSql, f: LogFilter): Promise<ParsingLogRow[]> {
  const rows = await tx`
    select * from public.mqtt_parsing_log
    where (${f.connectionId}::bigint is null or connection_id = ${f.connectionId})
      and (${f.category} = '' or kind = ${f.category})
      and (${f.search} = '' or topic ilike ${like(f.search)} or message ilike ${like(f.search)})
    order by last_seen_at desc, id desc
    limit ${f.limit}`;
  return z.array(parsingLogRow).parse(rows);
}
