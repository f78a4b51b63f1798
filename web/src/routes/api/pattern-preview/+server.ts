import { json } from '@sveltejs/kit';
import { z } from 'zod';
import { asUser } from '#lib/server/as-user.ts';
import { requireAdmin } from '#lib/server/guards.ts';
import { previewPatternTopics } from '#lib/server/queries/topics.ts';
import { patternPreviewQuery } from '#lib/server/topic-patterns.ts';
import type { RequestHandler } from './$types';

/** Topics a preview lists by name; the rest are counted. */
const SAMPLE = 12;

/**
 * The discovered topics a pattern being typed would match, and which pattern matches them today
 * (GET ?connection_id=…&pattern=…&priority=…[&pattern_id=…]), asked by the pattern forms. Admins
 * only (403 here; the forms are theirs); read as the signed-in user, so RLS bounds it too.
 */
export const GET: RequestHandler = async ({ locals, url, setHeaders }) => {
  const session = requireAdmin(locals);
  setHeaders({ 'cache-control': 'no-store' });
  const query = patternPreviewQuery.safeParse({
    connection_id: url.searchParams.get('connection_id') ?? undefined,
    pattern: url.searchParams.get('pattern') ?? undefined,
    priority: url.searchParams.get('priority') ?? undefined,
    pattern_id: url.searchParams.get('pattern_id') || undefined,
  });
  if (!query.success) {
    return json({ message: 'Not a valid pattern.', errors: z.flattenError(query.error).fieldErrors }, { status: 400 });
  }
  const q = query.data;
  const preview = await asUser(session.claims, (tx) =>
    previewPatternTopics(tx, {
      connectionId: q.connection_id,
      pattern: q.pattern,
      priority: q.priority,
      patternId: q.pattern_id ?? null,
      limit: SAMPLE,
    }),
  );
  return json(preview);
};
