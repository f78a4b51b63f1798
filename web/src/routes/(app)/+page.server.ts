import { asUser } from '#lib/server/as-user.ts';
import { requireSession } from '#lib/server/guards.ts';
import { listSiteSummaries } from '#lib/server/queries/sites.ts';
import type { PageServerLoad } from './$types';

export const load = (async ({ locals, depends }) => {
  depends('app:sites');
  const session = requireSession(locals);
  return { sites: await asUser(session.claims, (tx) => listSiteSummaries(tx)) };
}) satisfies PageServerLoad;
