import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtInParsers } from '@bfg/ingestor/parsers';
import {
  backfillStates,
  connectionEvents,
  connectionStatuses,
  devicePresences,
  logLevels,
  parsingLogKinds,
} from '@bfg/ingestor/vocabulary';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { newConnection, newSite } from '../support/factories.ts';

/**
 * Each vocabulary the code writes once (ingestor/src/vocabulary.ts) against the CHECK constraint
 * of the migrated schema: renaming a word in one and not the other fails here.
 */

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(() => db?.drop());

/** The values a `column in (...)` CHECK constraint of `table` allows, read from the catalog. */
async function allowed(table: string, column: string): Promise<string[]> {
  const rows = await db.sql<{ def: string }[]>`
    select pg_get_constraintdef(c.oid) as def
    from pg_constraint c
    join pg_attribute a on a.attrelid = c.conrelid and a.attnum = any (c.conkey)
    where c.conrelid = ${`public.${table}`}::regclass and c.contype = 'c' and a.attname = ${column}`;
  const def = rows.map((r) => r.def).find((d) => d.includes('ANY') || d.includes(' IN '));
  if (!def) throw new Error(`no list constraint on ${table}.${column}`);
  return [...def.matchAll(/'([^']*)'::text/g)].map((m) => m[1]!);
}

describe('vocabularies match the schema', () => {
  it.each([
    ['mqtt_connection', 'status', connectionStatuses],
    ['mqtt_connection_log', 'event', connectionEvents],
    ['mqtt_connection_log', 'level', logLevels],
    ['mqtt_parsing_log', 'kind', parsingLogKinds],
    ['gateway', 'presence', devicePresences],
    ['datalogger', 'presence', devicePresences],
    ['sensor', 'presence', devicePresences],
    ['backfill_run', 'state', backfillStates],
  ] as const)('%s.%s', async (table, column, words) => {
    expect([...(await allowed(table, column))].sort()).toEqual([...words].sort());
  });

  it("every built-in parser key passes mqtt_topic.parser's check, and a malformed key does not", async () => {
    const site = await newSite(db.sql);
    const connection = await newConnection(db.sql, site.id);
    for (const { key } of builtInParsers) {
      await db.sql`insert into mqtt_topic (connection_id, pattern, parser) values (${connection.id}, ${`p/${key}`}, ${key})`;
    }
    await expect(
      db.sql`insert into mqtt_topic (connection_id, pattern, parser) values (${connection.id}, 'p/bad', 'Not A Key')`,
    ).rejects.toMatchObject({ code: '23514' });
  });
});
