import postgres from 'postgres';
import { DATABASE_URL } from '$app/env/private';

/**
 * The dashboard's one pool. Its login role must be able to `SET ROLE authenticated` (the local
 * superuser, or Supabase's `postgres`): every query for a user runs through `asUser`, which
 * switches to that role with the user's JWT claims, so RLS decides what they see.
 */
let pool: postgres.Sql | null = null;

export function sql(): postgres.Sql {
  pool ??= postgres(DATABASE_URL, {
    max: 10,
    idle_timeout: 60,
    connection: { application_name: 'bfg-web' },
    onnotice: () => undefined,
  });
  return pool;
}
