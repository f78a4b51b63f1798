import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  LocalStackError,
  isSupabaseDatabase,
  migrate,
  missingSupabasePrerequisites,
  waitForSupabasePrerequisites,
} from '@bfg/local';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';

/**
 * `bfg-local migrate --wait`: on self-hosted Supabase the migrate job starts with Auth and
 * Realtime, and Realtime creates realtime.messages / realtime.send only after it reports healthy.
 * The wait is shown here on plain Postgres, where sql/bootstrap creates the same objects.
 */
describe('Supabase prerequisites of the migrations', () => {
  let empty: TestDatabase;
  let migrated: TestDatabase;

  beforeAll(async () => {
    empty = await createTestDatabase({ empty: true });
    migrated = await createTestDatabase();
  });
  afterAll(async () => {
    await empty?.drop();
    await migrated?.drop();
  });

  it('names what an empty database lacks, and nothing on a migrated one', async () => {
    expect(await missingSupabasePrerequisites(empty.sql)).toEqual([
      'auth.users',
      'realtime.messages',
      'realtime.send',
      'realtime.topic',
      'publication supabase_realtime',
    ]);
    expect(await missingSupabasePrerequisites(migrated.sql)).toEqual([]);
    await waitForSupabasePrerequisites(migrated.sql, { timeoutMs: 0 });
    // The test cluster is plain Postgres: the CLI's --wait does not wait there.
    expect(await isSupabaseDatabase(empty.sql)).toBe(false);
  });

  it('gives up after its timeout, naming what is still missing', async () => {
    const error = await waitForSupabasePrerequisites(empty.sql, { timeoutMs: 300, intervalMs: 50 }).catch(
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(LocalStackError);
    expect((error as Error).message).toMatch(
      /still lacks auth\.users, realtime\.messages, .*publication supabase_realtime/,
    );
  });

  it('returns once the objects appear while it waits', async () => {
    const said: string[] = [];
    const waiting = waitForSupabasePrerequisites(empty.sql, {
      timeoutMs: 20_000,
      intervalMs: 50,
      log: (m) => said.push(m),
    });
    await migrate(empty.sql, { bootstrap: true });
    await waiting;
    expect(said[0]).toMatch(/^waiting for Supabase Auth and Realtime to create auth\.users/);
  });
});
