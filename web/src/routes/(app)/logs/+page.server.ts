import { z } from 'zod';
import { asUser } from '#lib/server/as-user.ts';
import { requireAdmin, requireSession } from '#lib/server/guards.ts';
import { listConnectionOptions } from '#lib/server/queries/connection-options.ts';
import { listWorkerJobs } from '#lib/server/queries/jobs.ts';
import { decodeCursor, encodeCursor } from '#lib/server/cursor.ts';
import { listConnectionLog, listParsingLog, logCursor } from '#lib/server/queries/logs.ts';
import { logLevels, parsingLogKinds } from '#lib/rows.ts';
import type { PageServerLoad } from './$types';

/** Entries a page shows (newest first, "Older" pages further); live entries push the oldest out. */
const LOG_PAGE_SIZE = 200;

const filterSchema = z.object({
  tab: z.enum(['parsing', 'connection', 'jobs']).catch('parsing'),
  connection: z.coerce.number().int().positive().nullable().catch(null),
  category: z.enum(['', ...logLevels, ...parsingLogKinds]).catch(''),
  q: z.string().max(200).catch(''),
});

export const load = (async ({ locals, url, depends }) => {
  depends('app:logs');
  const filter = filterSchema.parse({
    tab: url.searchParams.get('tab') ?? 'parsing',
    connection: url.searchParams.get('connection') || null,
    category: url.searchParams.get('category') ?? '',
    q: url.searchParams.get('q') ?? '',
  });
  // Background jobs are for admins only: the tab is refused here (403), and worker_jobs() returns
  // nothing to anyone else anyway.
  const session = filter.tab === 'jobs' ? requireAdmin(locals) : requireSession(locals);
  const before = decodeCursor(url.searchParams.get('before'), logCursor);
  const query = {
    connectionId: filter.connection,
    category: filter.category,
    search: filter.q,
    limit: LOG_PAGE_SIZE,
    before,
  };
  return asUser(session.claims, async (tx) => {
    const parsing = filter.tab === 'parsing' ? await listParsingLog(tx, query) : null;
    const connection = filter.tab === 'connection' ? await listConnectionLog(tx, query) : null;
    const next = (parsing ?? connection)?.next ?? null;
    return {
      filter,
      connections: await listConnectionOptions(tx),
      parsing: parsing?.rows ?? [],
      connection: connection?.rows ?? [],
      jobs: filter.tab === 'jobs' ? await listWorkerJobs(tx) : [],
      next: next ? encodeCursor(next) : null,
      paged: before !== null,
      loadedAt: new Date(),
    };
  });
}) satisfies PageServerLoad;
