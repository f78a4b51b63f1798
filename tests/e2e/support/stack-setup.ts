import type { TestProject } from 'vitest/node';
import { startLocalStack } from '@bfg/local';
import { freePortStackConfig } from '../../support/local-stack-config.ts';
import { makeTempDir } from '../../support/temp-dir.ts';
import { startFakeSentry } from '../../support/fake-sentry.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The dashboard of the e2e stack. */
    e2eWebUrl: string;
    /** Superuser URL of the e2e stack's database (for SQL made "elsewhere", as in psql or Studio). */
    e2eDatabaseUrl: string;
    /** The demo broker the simulator and the seeded connection use. */
    e2eBrokerUrl: string;
    /** Lists the envelopes the dashboard sent to its SENTRY_DSN (a fake Sentry on loopback). */
    e2eSentryReceivedUrl: string;
  }
}

/**
 * The whole local system, as `npm start` runs it — embedded Postgres (migrated, seeded), realtime
 * server, demo broker, ingestor, simulator and the built dashboard — on free loopback ports, with
 * its data in a throwaway directory.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const dir = await makeTempDir('e2e');
  const config = await freePortStackConfig(dir.path);
  // The dashboard reports unexpected errors to SENTRY_DSN; here a fake Sentry on loopback.
  const sentry = await startFakeSentry();
  process.env['SENTRY_DSN'] = sentry.dsn;
  const lines: string[] = [];
  const stack = await startLocalStack(config, (line) => lines.push(line)).catch(async (err: unknown) => {
    await dir.remove();
    await sentry.close();
    throw new Error(`the e2e stack did not start:\n${lines.join('\n')}`, { cause: err });
  });
  if (!stack.webUrl) throw new Error('the e2e stack runs without the dashboard');
  project.provide('e2eWebUrl', stack.webUrl);
  project.provide('e2eDatabaseUrl', stack.databaseUrl);
  project.provide('e2eBrokerUrl', stack.brokerUrl);
  project.provide('e2eSentryReceivedUrl', sentry.receivedUrl);
  return async () => {
    await stack.stop();
    await sentry.close();
    await dir.remove();
  };
}
