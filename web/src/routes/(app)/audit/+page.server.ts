import { z } from 'zod';
import { auditedTables } from '#lib/rows.ts';
import { asUser } from '#lib/server/as-user.ts';
import { decodeCursor, encodeCursor } from '#lib/server/cursor.ts';
import { requireAdmin } from '#lib/server/guards.ts';
import { auditCursor, listAudit } from '#lib/server/queries/audit.ts';
import { listSitesForAdmin } from '#lib/server/queries/site-admin.ts';
import type { PageServerLoad } from './$types';

/** Changes a page shows, newest first; "Older" pages further. */
const PAGE_SIZE = 50;

const filterSchema = z.object({
  table: z.enum(auditedTables).nullable().catch(null),
  who: z.string().trim().max(320).catch(''),
  site: z.coerce.number().int().positive().nullable().catch(null),
  row: z.string().trim().max(200).catch(''),
});

/** The audit trail (admins only: 403 here, and RLS shows it to nobody else). */
export const load = (async ({ locals, url, depends }) => {
  depends('app:audit');
  const session = requireAdmin(locals);
  const filter = filterSchema.parse({
    table: url.searchParams.get('table') || null,
    who: url.searchParams.get('who') ?? '',
    site: url.searchParams.get('site') || null,
    row: url.searchParams.get('row') ?? '',
  });
  const before = decodeCursor(url.searchParams.get('before'), auditCursor);
  return asUser(session.claims, async (tx) => {
    const [page, sites] = await Promise.all([
      listAudit(tx, {
        table: filter.table,
        actor: filter.who,
        siteId: filter.site,
        rowId: filter.row,
        limit: PAGE_SIZE,
        before,
      }),
      listSitesForAdmin(tx),
    ]);
    return {
      filter,
      entries: page.rows,
      next: page.next ? encodeCursor(page.next) : null,
      paged: before !== null,
      sites: sites.map((s) => ({ id: s.id, name: s.name, slug: s.slug })),
      tables: auditedTables,
    };
  });
}) satisfies PageServerLoad;
