import { z } from 'zod';
import type { RawMessage } from '#lib/realtime/live-channel.svelte.ts';
import { siteChanges, SITE_CHANGES_EVENT, type SiteChanges } from './site-changes.ts';

/** A site's `changes` broadcast, validated; null when it is not one or does not validate. */
export function parseSiteChanges(message: RawMessage): SiteChanges | null {
  if (message.kind !== 'broadcast' || message.event !== SITE_CHANGES_EVENT) return null;
  const parsed = siteChanges.safeParse(message.payload);
  return parsed.success ? parsed.data : null;
}

/**
 * A postgres_changes message as an upsert or a delete of one row, validated with the table's row
 * schema; null when it does not validate.
 */
export type RowChange<T> = { op: 'upsert'; row: T } | { op: 'delete'; key: string | number };

/** The key of a deleted row in the tables keyed by `id` (Realtime sends the old primary key). */
export const idOf = (old: Record<string, unknown>): number | null => (typeof old['id'] === 'number' ? old['id'] : null);

export function rowChange<T>(
  message: RawMessage,
  schema: z.ZodType<T>,
  keyOf: (old: Record<string, unknown>) => string | number | null = idOf,
): RowChange<T> | null {
  if (message.kind !== 'postgres') return null;
  if (message.eventType === 'DELETE') {
    const old = z.record(z.string(), z.unknown()).safeParse(message.oldRecord);
    const key = old.success ? keyOf(old.data) : null;
    return key === null ? null : { op: 'delete', key };
  }
  const row = schema.safeParse(message.record);
  return row.success ? { op: 'upsert', row: row.data } : null;
}
