import { error, fail, redirect } from '@sveltejs/kit';
import postgres from 'postgres';
import { connectionSecretsSchema, connectionSettingsSchema } from '#lib/connection-form.ts';
import { asUser } from '#lib/server/as-user.ts';
import { echoFields as echo, testConnectionSettings } from '#lib/server/connection-test.ts';
import { fieldErrors, formFields } from '#lib/server/form.ts';
import { requireAdmin } from '#lib/server/guards.ts';
import { connectionDeletionImpact, deleteConnection } from '#lib/server/queries/connection-admin.ts';
import {
  getConnection,
  getSecretPresence,
  setSecrets,
  updateConnectionSettings,
} from '#lib/server/queries/connections.ts';
import type { Actions, PageServerLoad } from './$types';

export const load = (async ({ locals, params, depends }) => {
  depends('app:connection');
  const session = requireAdmin(locals);
  return asUser(session.claims, async (tx) => {
    const connection = await getConnection(tx, params.connectionId);
    if (!connection) error(404, 'No such connection.');
    // Which secrets are set, never their values: the browser gets booleans only.
    return {
      connection,
      secrets: await getSecretPresence(tx, connection.id),
      // What a deletion would take along (the confirmation says so).
      impact: await connectionDeletionImpact(tx, connection.id),
    };
  });
}) satisfies PageServerLoad;

export const actions = {
  save: async ({ locals, params, request }) => {
    const session = requireAdmin(locals);
    const fields = await formFields(request);
    const settings = connectionSettingsSchema.safeParse(fields);
    const secrets = connectionSecretsSchema.safeParse(fields);
    if (!settings.success || !secrets.success) {
      const errors = {
        ...(settings.success ? {} : fieldErrors(settings.error)),
        ...(secrets.success ? {} : fieldErrors(secrets.error)),
      };
      return fail(400, { values: echo(fields), errors, message: 'Some values need fixing.' });
    }
    try {
      const found = await asUser(session.claims, async (tx) => {
        if (!(await updateConnectionSettings(tx, params.connectionId, settings.data))) return false;
        const s = secrets.data;
        if (s.password !== null || s.client_cert !== null || s.client_key !== null || s.ca_cert !== null) {
          await setSecrets(tx, params.connectionId, s);
        }
        return true;
      });
      if (!found) error(404, 'No such connection.');
    } catch (err) {
      // A constraint the form does not know (or a value changed elsewhere meanwhile): say which.
      if (
        err instanceof postgres.PostgresError &&
        (err.code === '23514' || err.code === '23505' || err.code === '22P02')
      ) {
        return fail(400, {
          values: echo(fields),
          errors: {},
          message: `The database refused the change: ${err.message}`,
        });
      }
      throw err;
    }
    return { saved: true };
  },

  /** Tries the settings in the form against the broker, saving nothing (stored secrets where left empty). */
  test: async ({ locals, params, request }) => {
    const session = requireAdmin(locals);
    const fields = await formFields(request);
    // As the user first: an admin who may see this connection (RLS), and its site's slug.
    const connection = await asUser(session.claims, (tx) => getConnection(tx, params.connectionId));
    if (!connection) error(404, 'No such connection.');
    return testConnectionSettings(fields, connection.site_slug, connection.id, session.user.email);
  },

  /** Deletes the connection when the form repeats the site's slug (the page says what goes with it). */
  delete: async ({ locals, params, request }) => {
    const session = requireAdmin(locals);
    const fields = await formFields(request);
    const deleted = await asUser(session.claims, async (tx) => {
      const connection = await getConnection(tx, params.connectionId);
      if (!connection) error(404, 'No such connection.');
      if ((fields['confirm'] ?? '').trim() !== connection.site_slug) return null;
      await deleteConnection(tx, connection.id);
      return connection;
    });
    if (!deleted)
      return fail(400, {
        deleteErrors: { confirm: ['Type the site’s slug to confirm.'] },
        message: 'Not deleted.',
      });
    redirect(303, `/connections?deleted=${encodeURIComponent(deleted.site_slug)}`);
  },
} satisfies Actions;
