import { randomBytes } from 'node:crypto';
import postgres, { type Sql } from 'postgres';
import { inject } from 'vitest';

export interface TestDatabase {
  /** Superuser connection to the new database (the role the ingestor and migrations use). */
  sql: Sql;
  url: string;
  name: string;
  /** Closes every connection and drops the database. */
  drop(): Promise<void>;
}

function databaseUrl(name: string): string {
  const url = new URL(inject('pgAdminUrl'));
  url.pathname = `/${name}`;
  return url.toString();
}

/**
 * A database of its own for a test file: a clone of the migrated template, or an empty one
 * (`template0`) for tests that run migrations themselves.
 */
export async function createTestDatabase(options: { empty?: boolean } = {}): Promise<TestDatabase> {
  const name = `bfg_test_${randomBytes(6).toString('hex')}`;
  const admin = postgres(inject('pgAdminUrl'), { max: 1, onnotice: () => undefined });
  try {
    const template = options.empty ? 'template0' : inject('pgTemplateDb');
    await admin`create database ${admin(name)} template ${admin(template)}`;
  } finally {
    await admin.end();
  }
  const url = databaseUrl(name);
  const sql = postgres(url, { max: 4, onnotice: () => undefined });
  return {
    sql,
    url,
    name,
    async drop() {
      await sql.end({ timeout: 5 });
      const dropper = postgres(inject('pgAdminUrl'), { max: 1, onnotice: () => undefined });
      try {
        await dropper`drop database if exists ${dropper(name)} with (force)`;
      } finally {
        await dropper.end();
      }
    },
  };
}
