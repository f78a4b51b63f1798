import { fail } from '@sveltejs/kit';
import { asUser } from '#lib/server/as-user.ts';
import { formFields } from '#lib/server/form.ts';
import { parseId, requireAdmin, requireSession } from '#lib/server/guards.ts';
import { listConnections, setConnectionActive } from '#lib/server/queries/connections.ts';
import type { Actions, PageServerLoad } from './$types';

export const load = (async ({ locals, depends }) => {
  depends('app:connections');
  const session = requireSession(locals);
  return { connections: await asUser(session.claims, (tx) => listConnections(tx)) };
}) satisfies PageServerLoad;

/** Start/Stop: sets the desired state; the ingestor answers through the status columns. */
async function setActive(locals: App.Locals, request: Request, active: boolean) {
  const session = requireAdmin(locals);
  const id = parseId((await formFields(request))['id'], 'connection id');
  const row = await asUser(session.claims, (tx) => setConnectionActive(tx, id, active));
  if (!row) return fail(404, { message: `Connection ${id} does not exist (any more).` });
  return { id, is_active: row.is_active };
}

export const actions = {
  start: ({ locals, request }) => setActive(locals, request, true),
  stop: ({ locals, request }) => setActive(locals, request, false),
} satisfies Actions;
