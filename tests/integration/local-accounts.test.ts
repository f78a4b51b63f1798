import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalStackError, addUser, hashPassword, mintAccessToken, repoRoot, verifyPassword } from '@bfg/local';
import { asClaims, type Claims } from '../support/claims.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { newSite } from '../support/factories.ts';

/** Local accounts: strong hashes, the CLI, and tokens that RLS treats like Supabase Auth's. */

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db.drop();
});

describe('local accounts', () => {
  it('hashes passwords with scrypt and a salt, and verifies them in constant time', async () => {
    const a = await hashPassword('correct horse battery');
    const b = await hashPassword('correct horse battery');
    expect(a).toMatch(/^scrypt\$32768\$8\$1\$[\w-]+\$[\w-]+$/);
    expect(a).not.toBe(b);
    expect(await verifyPassword('correct horse battery', a)).toBe(true);
    expect(await verifyPassword('correct horse batterY', a)).toBe(false);
    expect(await verifyPassword('anything', '$2a$10$bcrypthashfromgotrue')).toBe(false);
    expect(await verifyPassword('anything', null)).toBe(false);
  });

  it('creates members of given sites and admins; refuses weak passwords and unknown sites', async () => {
    const site = await newSite(db.sql);
    const member = await addUser(db.sql, {
      email: 'Member@Example.test',
      password: 'long enough pass',
      role: 'member',
      sites: [site.slug],
    });
    expect(member.created).toBe(true);
    const [row] = await db.sql<{ email: string; meta: Record<string, unknown>; sites: string[] }[]>`
      select u.email, u.raw_app_meta_data as meta, array(select s.slug from site_member m join site s on s.id = m.site_id where m.user_id = u.id) as sites
      from auth.users u where u.id = ${member.id}`;
    expect(row).toEqual({
      email: 'member@example.test',
      meta: { provider: 'email', providers: ['email'] },
      sites: [site.slug],
    });
    const again = await addUser(db.sql, { email: 'member@example.test', password: 'another long one', role: 'admin' });
    expect(again).toEqual({ id: member.id, created: false });

    await expect(addUser(db.sql, { email: 'x@example.test', password: 'short', role: 'member' })).rejects.toThrow(
      /password: at least 12 characters/,
    );
    await expect(
      addUser(db.sql, { email: 'y@example.test', password: 'long enough pass', role: 'member', sites: ['nope'] }),
    ).rejects.toBeInstanceOf(LocalStackError);
  });

  it('mints tokens with Supabase Auth claims that RLS reads as the user', async () => {
    const site = await newSite(db.sql);
    await newSite(db.sql);
    const { id } = await addUser(db.sql, {
      email: `m-${randomBytes(3).toString('hex')}@example.test`,
      password: 'long enough pass',
      role: 'member',
      sites: [site.slug],
    });
    const secret = randomBytes(32).toString('hex');
    const token = await mintAccessToken({ id, email: 'm@example.test', appMetadata: { provider: 'email' } }, secret);
    const claims = decodeJwt(token) as unknown as Claims;
    expect(claims).toMatchObject({ sub: id, role: 'authenticated', aud: 'authenticated', aal: 'aal1' });
    const sites = await asClaims(db.sql, claims, (tx) => tx<{ slug: string }[]>`select slug from site`);
    expect(sites.map((s) => s.slug)).toEqual([site.slug]);
  });

  it('npm run user:add creates an account from the command line, password on standard input', async () => {
    const site = await newSite(db.sql);
    const output = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = spawn(
        process.execPath,
        [
          path.join(repoRoot, 'supabase/local/src/cli.ts'),
          'user:add',
          '--email',
          'cli@example.test',
          '--role',
          'member',
          '--site',
          site.slug,
        ],
        {
          env: { ...process.env, DATABASE_URL: db.url, BFG_USER_PASSWORD: '' },
          stdio: ['pipe', 'pipe', 'pipe'],
        },
      );
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr.on('data', (c: Buffer) => (out += c.toString()));
      child.on('exit', (code) => resolve({ code, out }));
      child.stdin.end('a long cli password\n');
    });
    expect(output.out).toMatch(/created member cli@example\.test/);
    expect(output.code).toBe(0);
    const [row] = await db.sql<
      { hash: string }[]
    >`select encrypted_password as hash from auth.users where email = 'cli@example.test'`;
    expect(await verifyPassword('a long cli password', row!.hash)).toBe(true);
    expect(output.out).not.toContain('a long cli password');
  });
});
