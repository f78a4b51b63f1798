import type { TransactionSql } from 'postgres';
import { z } from 'zod';
import { auditRow, auditedTables, type AuditRow } from '../../rows.ts';
import { MICROSECOND_FORMAT, microsecondTime } from './topics.ts';

export const auditCursor = z.object({ at: microsecondTime, id: z.coerce.number().int().positive() });
export type AuditCursor = z.infer<typeof auditCursor>;

export interface AuditFilter {
  table: (typeof auditedTables)[number] | null;
  /** Who: an e-mail, a JWT subject or a database user (audit_log.actor, lower case). */
  actor: string;
  siteId: number | null;
  /** The row's key (an id; `<site_id>/<user_id>` for a membership). */
  rowId: string;
  limit: number;
  /** Keyset: the page after this row, newest first. */
  before: AuditCursor | null;
}

/**
 * A page of the audit trail, newest first, as the signed-in user (RLS: admins only; others get
 * nothing). Every filter is an equality on an indexed column and the page an index range over
 * (at, id) after the cursor, so the first screen reads `limit` rows however long the trail. The
 * filters not set are left out of the statement (not `$1 is null or …`), so each combination is
 * planned for its own index, also once Postgres switches a prepared statement to a generic plan.
 */
export async function listAudit(
  tx: TransactionSql,
  f: AuditFilter,
): Promise<{ rows: AuditRow[]; next: AuditCursor | null }> {
  const before = f.before;
  const rows = await tx`
    select a.*, to_char(a.at at time zone 'UTC', ${MICROSECOND_FORMAT}) as cursor_at
    from (select * from public.audit_log
    where true
      ${f.table !== null ? tx`and table_name = ${f.table}` : tx``}
      ${f.actor !== '' ? tx`and actor = lower(${f.actor})` : tx``}
      ${f.siteId !== null ? tx`and site_id = ${f.siteId}` : tx``}
      ${f.rowId !== '' ? tx`and row_id = ${f.rowId}` : tx``}
      ${before ? tx`and (at, id) < (${before.at}::text::timestamptz, ${before.id})` : tx``}
    order by at desc, id desc
    limit ${f.limit + 1}) a
    order by a.at desc, a.id desc`;
  const parsed = z.array(auditRow).parse(rows.slice(0, f.limit));
  const last = rows[f.limit - 1];
  return {
    rows: parsed,
    next: rows.length > f.limit && last ? { at: String(last['cursor_at']), id: Number(last['id']) } : null,
  };
}
