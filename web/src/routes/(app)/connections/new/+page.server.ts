import { error, fail, redirect } from '@sveltejs/kit';
import postgres from 'postgres';
import { z } from 'zod';
import { connectionSecretsSchema, connectionSettingsSchema } from '#lib/connection-form.ts';
import { asUser } from '#lib/server/as-user.ts';
import { echoFields, testConnectionSettings } from '#lib/server/connection-test.ts';
import { fieldErrors, formFields } from '#lib/server/form.ts';
import { parseId, requireAdmin } from '#lib/server/guards.ts';
import { createConnection, getSiteOption, listSitesWithoutConnection } from '#lib/server/queries/connection-admin.ts';
import { setSecrets } from '#lib/server/queries/connections.ts';
import type { Actions, PageServerLoad } from './$types';

/** New connection: for a site that has none (admins only, 403 otherwise; RLS refuses the insert too). */
export const load = (async ({ locals, url }) => {
  const session = requireAdmin(locals);
  const site = z.coerce
    .number()
    .int()
    .positive()
    .nullable()
    .catch(null)
    .parse(url.searchParams.get('site') || null);
  return asUser(session.claims, async (tx) => ({
    sites: await listSitesWithoutConnection(tx),
    selected: site,
  }));
}) satisfies PageServerLoad;

export const actions = {
  create: async ({ locals, request }) => {
    const session = requireAdmin(locals);
    const fields = await formFields(request);
    const siteId = parseId(fields['site_id'], 'site');
    const settings = connectionSettingsSchema.safeParse(fields);
    const secrets = connectionSecretsSchema.safeParse(fields);
    if (!settings.success || !secrets.success) {
      const errors = {
        ...(settings.success ? {} : fieldErrors(settings.error)),
        ...(secrets.success ? {} : fieldErrors(secrets.error)),
      };
      return fail(400, { values: echoFields(fields), errors, message: 'Some values need fixing.' });
    }
    let id: number;
    try {
      id = await asUser(session.claims, async (tx) => {
        const created = await createConnection(tx, siteId, settings.data);
        const s = secrets.data;
        if (s.password || s.client_cert || s.client_key || s.ca_cert) await setSecrets(tx, created, s);
        return created;
      });
    } catch (err) {
      if (err instanceof postgres.PostgresError && err.code === '23505')
        return fail(400, {
          values: echoFields(fields),
          errors: { site_id: ['This site has a connection already.'] },
          message: 'Not created.',
        });
      if (err instanceof postgres.PostgresError && err.code === '23503')
        return fail(400, {
          values: echoFields(fields),
          errors: { site_id: ['No such site.'] },
          message: 'Not created.',
        });
      if (err instanceof postgres.PostgresError && (err.code === '23514' || err.code === '22P02'))
        return fail(400, {
          values: echoFields(fields),
          errors: {},
          message: `The database refused it: ${err.message}`,
        });
      throw err;
    }
    redirect(303, `/connections/${id}?created=1`);
  },

  /** Tries the settings in the form against the broker, saving nothing. */
  test: async ({ locals, request }) => {
    const session = requireAdmin(locals);
    const fields = await formFields(request);
    const siteId = parseId(fields['site_id'], 'site');
    const site = await asUser(session.claims, (tx) => getSiteOption(tx, siteId));
    if (!site) error(404, 'No such site.');
    return testConnectionSettings(fields, site.slug, null, session.user.email);
  },
} satisfies Actions;
