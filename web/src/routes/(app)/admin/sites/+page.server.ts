import { error, fail, redirect } from '@sveltejs/kit';
import postgres from 'postgres';
import { z } from 'zod';
import { newSiteSchema, siteEditSchema } from '#lib/site-form.ts';
import { asUser } from '#lib/server/as-user.ts';
import { fieldErrors, formFields } from '#lib/server/form.ts';
import { parseId, requireAdmin } from '#lib/server/guards.ts';
import {
  createSite,
  deleteSite,
  listSitesForAdmin,
  siteDeletionImpact,
  updateSite,
} from '#lib/server/queries/site-admin.ts';
import type { Actions, PageServerLoad } from './$types';

const viewSchema = z.object({
  edit: z.coerce.number().int().positive().nullable().catch(null),
  delete: z.coerce.number().int().positive().nullable().catch(null),
});

/** Manage sites (admins only: 403 here for anyone else, and RLS refuses their writes too). */
export const load = (async ({ locals, url, depends }) => {
  depends('app:admin-sites');
  const session = requireAdmin(locals);
  const view = viewSchema.parse({
    edit: url.searchParams.get('edit') || null,
    delete: url.searchParams.get('delete') || null,
  });
  return asUser(session.claims, async (tx) => ({
    sites: await listSitesForAdmin(tx),
    view,
    // What a deletion takes along, counted only for the site whose confirmation is open.
    impact: view.delete === null ? null : ((await siteDeletionImpact(tx, view.delete)) ?? null),
  }));
}) satisfies PageServerLoad;

function refusal(err: unknown): string | undefined {
  if (!(err instanceof postgres.PostgresError)) return undefined;
  if (err.code === '23514' || err.code === '22P02') return `The database refused the site: ${err.message}`;
  return undefined;
}

export const actions = {
  create: async ({ locals, request }) => {
    const session = requireAdmin(locals);
    const fields = await formFields(request);
    const parsed = newSiteSchema.safeParse(fields);
    if (!parsed.success)
      return fail(400, {
        action: 'create',
        values: fields,
        errors: fieldErrors(parsed.error),
        message: 'The site needs fixing.',
      });
    try {
      const site = await asUser(session.claims, (tx) => createSite(tx, parsed.data));
      return { action: 'create', created: site };
    } catch (err) {
      if (err instanceof postgres.PostgresError && err.code === '23505')
        return fail(400, {
          action: 'create',
          values: fields,
          errors: { slug: ['A site with this slug exists already.'] },
          message: 'The site needs fixing.',
        });
      const message = refusal(err);
      if (message) return fail(400, { action: 'create', values: fields, errors: {}, message });
      throw err;
    }
  },

  update: async ({ locals, request }) => {
    const session = requireAdmin(locals);
    const fields = await formFields(request);
    const parsed = siteEditSchema.safeParse(fields);
    if (!parsed.success)
      return fail(400, {
        action: 'update',
        id: Number(fields['id']) || null,
        values: fields,
        errors: fieldErrors(parsed.error),
        message: 'The site needs fixing.',
      });
    let found: boolean;
    try {
      found = await asUser(session.claims, (tx) => updateSite(tx, parsed.data));
    } catch (err) {
      const message = refusal(err);
      if (message) return fail(400, { action: 'update', id: parsed.data.id, values: fields, errors: {}, message });
      throw err;
    }
    if (!found) error(404, 'No such site.');
    redirect(303, '/admin/sites');
  },

  /** Deletes a site when the form repeats its slug (the confirmation says what goes with it). */
  delete: async ({ locals, request }) => {
    const session = requireAdmin(locals);
    const fields = await formFields(request);
    const id = parseId(fields['id'], 'site id');
    const deleted = await asUser(session.claims, async (tx) => {
      const impact = await siteDeletionImpact(tx, id);
      if (!impact) error(404, 'No such site.');
      if ((fields['confirm'] ?? '').trim() !== impact.slug) return null;
      await deleteSite(tx, id);
      return impact;
    });
    if (!deleted)
      return fail(400, {
        action: 'delete',
        id,
        values: fields,
        errors: { confirm: ['Type the site’s slug to confirm.'] },
        message: 'Not deleted.',
      });
    return { action: 'delete', deleted: { slug: deleted.slug, name: deleted.name } };
  },
} satisfies Actions;
