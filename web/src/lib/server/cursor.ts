import type { z } from 'zod';

/**
 * Keyset cursors in URLs (`?after=…`): the last row's sort columns as base64url JSON, so "Older"
 * links work without JavaScript and a page can be reloaded. Decoded with the query's zod schema;
 * anything else (tampered, truncated) is the first page.
 */
export function encodeCursor(cursor: unknown): string {
  return Buffer.from(JSON.stringify(cursor)).toString('base64url');
}

export function decodeCursor<T>(value: string | null, schema: z.ZodType<T>): T | null {
  if (!value || value.length > 4096) return null;
  try {
    const parsed = schema.safeParse(JSON.parse(Buffer.from(value, 'base64url').toString('utf8')));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}
