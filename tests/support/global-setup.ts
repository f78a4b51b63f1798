import { randomBytes } from 'node:crypto';
import path from 'node:path';
import postgres from 'postgres';
import type { TestProject } from 'vitest/node';
import { getFreePort, migrate, startEmbeddedPostgres } from '@bfg/local';
import { makeTempDir } from './temp-dir.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Superuser URL of the test cluster's maintenance database. */
    pgAdminUrl: string;
    /** A database migrated to the current schema (no seed), to clone with `create database … template`. */
    pgTemplateDb: string;
  }
}

export const TEMPLATE_DB = 'bfg_template';

/**
 * Starts one throwaway embedded Postgres for the run and migrates the template database once;
 * each test file then clones it (graphile-worker's and immich's pattern), so files never share rows.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const dir = await makeTempDir('test-pg');
  const server = await startEmbeddedPostgres({
    dataDir: path.join(dir.path, 'data'),
    port: await getFreePort(),
    password: randomBytes(12).toString('hex'),
    ephemeral: true,
  });
  const admin = postgres(server.adminUrl, { max: 1, onnotice: () => undefined });
  try {
    await admin`create database ${admin(TEMPLATE_DB)}`;
    const template = postgres(server.urlFor(TEMPLATE_DB), { max: 1, onnotice: () => undefined });
    try {
      await migrate(template);
    } finally {
      await template.end();
    }
    await admin`alter database ${admin(TEMPLATE_DB)} is_template true`;
  } catch (err) {
    await admin.end();
    await server.stop();
    await dir.remove();
    throw err;
  }
  await admin.end();

  project.provide('pgAdminUrl', server.adminUrl);
  project.provide('pgTemplateDb', TEMPLATE_DB);

  return async () => {
    await server.stop();
    await dir.remove();
  };
}
