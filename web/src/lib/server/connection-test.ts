import { fail } from '@sveltejs/kit';
import { connectionSecretsSchema, connectionSettingsSchema, secretFieldNames } from '../connection-form.ts';
import { testBroker, type TestSecrets } from './broker-test.ts';
import { fieldErrors } from './form.ts';
import { logger } from './logger.ts';
import { storedSecretsForTest } from './queries/connection-admin.ts';

/** What a form sends back on an error or a test: what was typed, minus every secret. */
export function echoFields(fields: Record<string, string>): Record<string, string> {
  const values = { ...fields };
  for (const name of secretFieldNames) delete values[name];
  return values;
}

/**
 * Test connection: the form's settings, validated as for saving, tried against the broker without
 * saving anything. A secret field left empty means what is stored for `connectionId` (the edit
 * form's "keep"), a ticked "remove" box means none. Callers have checked that the user is an
 * admin who may see the connection.
 */
export async function testConnectionSettings(
  fields: Record<string, string>,
  siteSlug: string,
  connectionId: number | null,
  who: string,
) {
  const settings = connectionSettingsSchema.safeParse(fields);
  const secrets = connectionSecretsSchema.safeParse(fields);
  if (!settings.success || !secrets.success) {
    const errors = {
      ...(settings.success ? {} : fieldErrors(settings.error)),
      ...(secrets.success ? {} : fieldErrors(secrets.error)),
    };
    return fail(400, { values: echoFields(fields), errors, message: 'Some values need fixing before a test.' });
  }
  const stored: TestSecrets =
    connectionId === null
      ? { password: null, client_cert: null, client_key: null, ca_cert: null }
      : await storedSecretsForTest(connectionId);
  // Typed: use it; '' (remove ticked): none; null (left empty): what is stored.
  const pick = (typed: string | null, kept: string | null) => (typed === null ? kept : typed === '' ? null : typed);
  const s = secrets.data;
  const result = await testBroker(siteSlug, settings.data, {
    password: pick(s.password, stored.password),
    client_cert: pick(s.client_cert, stored.client_cert),
    client_key: pick(s.client_key, stored.client_key),
    ca_cert: pick(s.ca_cert, stored.ca_cert),
  });
  logger.info(
    { who, connectionId, broker: result.broker, kind: result.kind, reasonCode: result.reasonCode },
    'test connection',
  );
  return { test: result, values: echoFields(fields) };
}
