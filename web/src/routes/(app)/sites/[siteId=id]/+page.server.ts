import { error } from '@sveltejs/kit';
import { asUser } from '#lib/server/as-user.ts';
import { requireSession } from '#lib/server/guards.ts';
import { loadSiteDevices } from '#lib/server/queries/devices.ts';
import { listSiteSummaries } from '#lib/server/queries/sites.ts';
import { loadSiteSparklines, SPARKLINE_S } from '#lib/server/queries/sparklines.ts';
import type { PageServerLoad } from './$types';

export const load = (async ({ locals, params, depends }) => {
  depends('app:site-devices');
  const session = requireSession(locals);
  return asUser(session.claims, async (tx) => {
    const [site] = await listSiteSummaries(tx, params.siteId);
    // RLS hides other sites' rows: for this user the site does not exist.
    if (!site) error(404, 'No such site, or you are not a member of it.');
    const [devices, sparklines] = await Promise.all([
      loadSiteDevices(tx, params.siteId),
      // Every sensor's last hour in one query (the five-minute rollups); live values are appended.
      loadSiteSparklines(tx, params.siteId),
    ]);
    return { site, devices, sparklines, sparklineS: SPARKLINE_S };
  });
}) satisfies PageServerLoad;
