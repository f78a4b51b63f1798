import type { Db } from '../db.ts';

/**
 * Sends the pending device, topic and parsing-log changes of every site that is due, as one
 * `changes` broadcast per site (supabase/migrations/20261201000200_coalesced_site_changes.sql).
 * Returns the milliseconds until the next pending site is due — 0 when one is due but was busy (a
 * writer's open transaction or another flusher) — or null when nothing is pending.
 */
export async function sendSiteChanges(sql: Db, minIntervalMs: number): Promise<number | null> {
  const [row]: [{ nextDueMs: number | null }?] =
    await sql`select private.send_site_changes(${minIntervalMs}) as "nextDueMs"`;
  return row?.nextDueMs ?? null;
}
