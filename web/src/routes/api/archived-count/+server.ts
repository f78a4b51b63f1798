import { error, json } from '@sveltejs/kit';
import postgres from 'postgres';
import { z } from 'zod';
import { asUser } from '#lib/server/as-user.ts';
import { requireAdmin } from '#lib/server/guards.ts';
import { archivedMessageCount } from '#lib/server/queries/topics.ts';
import { archivedCountQuery } from '#lib/server/topic-patterns.ts';
import type { RequestHandler } from './$types';

/**
 * How many archived messages a pattern would replay, asked by the pattern forms while an admin
 * types (GET ?connection_id=…&pattern=…). Admins only, checked here (403) and by the database
 * (archived_message_count raises 42501 for anyone else); read as the signed-in user, so the
 * answer is what that user's RLS and grants allow.
 */
export const GET: RequestHandler = async ({ locals, url, setHeaders }) => {
  const session = requireAdmin(locals);
  setHeaders({ 'cache-control': 'no-store' });
  const query = archivedCountQuery.safeParse({
    connection_id: url.searchParams.get('connection_id') ?? undefined,
    pattern: url.searchParams.get('pattern') ?? undefined,
  });
  if (!query.success) {
    return json({ message: 'Not a valid pattern.', errors: z.flattenError(query.error).fieldErrors }, { status: 400 });
  }
  try {
    const count = await asUser(session.claims, (tx) =>
      archivedMessageCount(tx, query.data.connection_id, query.data.pattern),
    );
    return json({ count });
  } catch (err) {
    if (err instanceof postgres.PostgresError && err.code === '42501')
      error(403, 'Only admins can search the archive.');
    throw err;
  }
};
