import { z } from 'zod';
import { asUser } from '#lib/server/as-user.ts';
import { requireAdmin, requireSession } from '#lib/server/guards.ts';
import { listConnectionOptions } from '#lib/server/queries/connection-options.ts';
import { listWorkerJobs } from '#lib/server/queries/jobs.ts';
import { listConnectionLog, listParsingLog } from '#lib/server/queries/logs.ts';
import { logLevels, parsingLogKinds } from '#lib/rows.ts';
import type { PageServerLoad } from './$types';

/** Entries a page shows (newest first); live entries push the oldest out. */
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
  const query = { connectionId: filter.connection, category: filter.category, search: filter.q, limit: LOG_PAGE_SIZE };
  return asUser(session.claims, async (tx) => ({
    filter,
    connections: await listConnectionOptions(tx),
    parsing: filter.tab === 'parsing' ? await listParsingLog(tx, query) : [],
    connection: filter.tab === 'connection' ? await listConnectionLog(tx, query) : [],
    jobs: filter.tab === 'jobs' ? await listWorkerJobs(tx) : [],
    loadedAt: new Date(),
  }));
}) satisfies PageServerLoad;
