import { randomBytes } from 'node:crypto';
import type { Sql } from 'postgres';
import { addUser } from './auth/users.ts';

export const FIRST_ADMIN_EMAIL = 'admin@bfg.local';

/**
 * A fresh local stack has no accounts, so nobody could sign in to the dashboard. Create one admin
 * with a random password, printed once. There is no default password: every installation's first
 * password is different, and `npm run user:add` resets it.
 */
export async function ensureFirstAdmin(sql: Sql, log: (message: string) => void): Promise<void> {
  const [row]: [{ users: number }?] = await sql`select count(*)::int as users from auth.users`;
  const users = row?.users ?? 0;
  if (users > 0) {
    log(`sign in with an account made by \`npm run user:add\` (${users} account(s) exist); reset a password with`);
    log(`  npm run user:add -- --email ${FIRST_ADMIN_EMAIL} --role admin --generate-password`);
    return;
  }
  const password = randomBytes(15).toString('base64url');
  await addUser(sql, { email: FIRST_ADMIN_EMAIL, password, role: 'admin', sites: [] });
  log(`created the first admin account — sign in as ${FIRST_ADMIN_EMAIL} with password ${password}`);
  log(
    '  (shown once; set a new one with `npm run user:add -- --email admin@bfg.local --role admin --generate-password`)',
  );
}
