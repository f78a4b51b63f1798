import { fail } from '@sveltejs/kit';
import { z } from 'zod';
import { asUser } from '#lib/server/as-user.ts';
import { formFields } from '#lib/server/form.ts';
import { parseId, requireAdmin, requireSession } from '#lib/server/guards.ts';
import { listConnections, setConnectionActive } from '#lib/server/queries/connections.ts';
import type { Actions, PageServerLoad } from './$types';

/**
 * Which ingestor instance holds each session: the connection's own (mqtt_connection) and, for a
 * shared connection, its member sessions (mqtt_connection_member; README, Scaling out).
 */
const holder = z.object({
  connection_id: z.coerce.number().int(),
  slot: z.coerce.number().int(),
  owner_instance: z.string().nullable(),
  lease_expires_at: z.coerce.date().nullable(),
});
export type Holder = z.infer<typeof holder>;

export const load = (async ({ locals, depends }) => {
  depends('app:connections');
  const session = requireSession(locals);
  return asUser(session.claims, async (tx) => {
    const connections = await listConnections(tx);
    const holders = z.array(holder).parse(
      await tx`
        select id as connection_id, 0 as slot, owner_instance, lease_expires_at from public.mqtt_connection
        union all
        select connection_id, slot, owner_instance, lease_expires_at from public.mqtt_connection_member
        order by 1, 2`,
    );
    const own = new Map(holders.filter((h) => h.slot === 0).map((h) => [h.connection_id, h]));
    return {
      connections: connections.map((c) => ({
        ...c,
        owner_instance: own.get(c.id)?.owner_instance ?? null,
        lease_expires_at: own.get(c.id)?.lease_expires_at ?? null,
      })),
      members: holders.filter((h) => h.slot > 0),
    };
  });
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
