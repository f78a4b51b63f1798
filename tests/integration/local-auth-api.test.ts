import { randomBytes } from 'node:crypto';
import { createClient } from '@supabase/supabase-js';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addUser,
  createAuthApi,
  getFreePort,
  mintAnonKey,
  mintServiceRoleKey,
  startRealtimeServer,
  type RealtimeServer,
} from '@bfg/local';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { signJwt } from '../support/jwt.ts';

/**
 * The local Auth API (GoTrue subset at /auth/v1, on the realtime server's port) driven by the
 * unmodified supabase-js client: the same calls, answers and error codes as against Supabase Auth.
 */

let db: TestDatabase;
let server: RealtimeServer;
let secret: string;
let anonKey: string;
let serviceKey: string;
const PASSWORD = 'a long enough password';

beforeAll(async () => {
  db = await createTestDatabase();
  secret = randomBytes(32).toString('hex');
  anonKey = await mintAnonKey(secret);
  serviceKey = await mintServiceRoleKey(secret);
  server = await startRealtimeServer({
    port: await getFreePort(),
    jwtSecret: secret,
    sql: db.sql,
    databaseUrl: db.url,
    // 0 s: a rotated token presented again is reuse at once (Supabase's default waits 10 s).
    httpHandler: createAuthApi({ sql: db.sql, jwtSecret: secret, refreshTokenReuseIntervalS: 0 }),
  });
});
afterAll(async () => {
  await server?.close();
  await db?.drop();
});

const client = (key = anonKey) =>
  createClient(server.url, key, { auth: { persistSession: false, autoRefreshToken: false } });
const admin = () => client(serviceKey).auth.admin;

async function newAccount(): Promise<{ id: string; email: string }> {
  const email = `u-${randomBytes(4).toString('hex')}@example.test`;
  const { id } = await addUser(db.sql, { email, password: PASSWORD, role: 'member' });
  return { id, email };
}

async function signIn(email: string, password = PASSWORD) {
  const supabase = client();
  const { data, error } = await supabase.auth.signInWithPassword({ email, password });
  if (error) throw error;
  return { supabase, session: data.session };
}

describe('local Auth API', () => {
  it('signs in with a password: a Supabase session whose token names a stored session', async () => {
    const { id, email } = await newAccount();
    const { supabase, session } = await signIn(email);
    expect(session).toMatchObject({
      token_type: 'bearer',
      expires_in: 3600,
      user: { id, email, aud: 'authenticated', role: 'authenticated' },
    });
    const claims = decodeJwt(session.access_token);
    expect(claims).toMatchObject({ sub: id, role: 'authenticated', aud: 'authenticated', email, aal: 'aal1' });
    const [stored] = await db.sql<{ user_id: string; token: string }[]>`
      select s.user_id::text, t.token from auth.sessions s join auth.refresh_tokens t on t.session_id = s.id where s.id = ${String(claims['session_id'])}`;
    expect(stored?.user_id).toBe(id);
    // Only the hash is stored.
    expect(stored?.token).not.toBe(session.refresh_token);
    expect(stored?.token).toMatch(/^[0-9a-f]{64}$/);

    const { data, error } = await supabase.auth.getUser(session.access_token);
    expect(error).toBeNull();
    expect(data.user).toMatchObject({ id, email, app_metadata: { provider: 'email', providers: ['email'] } });
  });

  it("refuses a wrong password and an unknown address alike, with GoTrue's error", async () => {
    const { email } = await newAccount();
    for (const attempt of [
      { email, password: 'not the password' },
      { email: 'nobody@example.test', password: PASSWORD },
    ]) {
      const { data, error } = await client().auth.signInWithPassword(attempt);
      expect(data.session).toBeNull();
      expect(error).toMatchObject({
        name: 'AuthApiError',
        status: 400,
        code: 'invalid_credentials',
        message: 'Invalid login credentials',
      });
    }
  });

  it('rotates refresh tokens, and reuse of an old one revokes the family', async () => {
    const { email } = await newAccount();
    const { supabase, session: first } = await signIn(email);
    const second = await supabase.auth.refreshSession({ refresh_token: first.refresh_token });
    expect(second.error).toBeNull();
    expect(second.data.session!.refresh_token).not.toBe(first.refresh_token);
    expect(decodeJwt(second.data.session!.access_token)['session_id']).toBe(
      decodeJwt(first.access_token)['session_id'],
    );
    const third = await supabase.auth.refreshSession({ refresh_token: second.data.session!.refresh_token });
    expect(third.error).toBeNull();

    // The first token is neither the current one nor its parent: reuse.
    const reused = await client().auth.refreshSession({ refresh_token: first.refresh_token });
    expect(reused.error).toMatchObject({
      status: 400,
      code: 'refresh_token_already_used',
      message: 'Invalid Refresh Token: Already Used',
    });
    // The whole family went with it, the latest token included.
    const latest = await client().auth.refreshSession({ refresh_token: third.data.session!.refresh_token });
    expect(latest.error).toMatchObject({ status: 400, code: 'refresh_token_already_used' });

    const unknown = await client().auth.refreshSession({ refresh_token: randomBytes(20).toString('hex') });
    expect(unknown.error).toMatchObject({
      status: 400,
      code: 'refresh_token_not_found',
      message: 'Invalid Refresh Token: Refresh Token Not Found',
    });
  });

  it('lets a client that lost a refresh answer present the previous token once more', async () => {
    const { email } = await newAccount();
    const { supabase, session: first } = await signIn(email);
    const lost = await supabase.auth.refreshSession({ refresh_token: first.refresh_token });
    expect(lost.error).toBeNull();
    // The answer never reached the client: it tries its token again and gets a working one.
    const retry = await client().auth.refreshSession({ refresh_token: first.refresh_token });
    expect(retry.error).toBeNull();
    const next = await client().auth.refreshSession({ refresh_token: retry.data.session!.refresh_token });
    expect(next.error).toBeNull();
  });

  it('signs out one session, the others, or all of them', async () => {
    const { email } = await newAccount();
    const a = await signIn(email);
    const b = await signIn(email);
    const c = await signIn(email);
    const alive = async (s: { session: { access_token: string; refresh_token: string } }) => {
      const { error } = await client().auth.getUser(s.session.access_token);
      return error === null;
    };

    expect((await a.supabase.auth.signOut({ scope: 'local' })).error).toBeNull();
    expect([await alive(a), await alive(b), await alive(c)]).toEqual([false, true, true]);
    // GoTrue's answer, which supabase-js turns into an AuthSessionMissingError.
    const raw = await fetch(`${server.url}/auth/v1/user`, {
      headers: {
        apikey: anonKey,
        authorization: `Bearer ${a.session.access_token}`,
        'x-supabase-api-version': '2024-01-01',
      },
    });
    expect(raw.status).toBe(403);
    expect(await raw.json()).toEqual({
      code: 'session_not_found',
      message: 'Session from session_id claim in JWT does not exist',
    });
    expect((await client().auth.getUser(a.session.access_token)).error).toMatchObject({
      name: 'AuthSessionMissingError',
    });
    const refreshed = await client().auth.refreshSession({ refresh_token: a.session.refresh_token });
    expect(refreshed.error).toMatchObject({ status: 400, code: 'refresh_token_not_found' });

    expect((await b.supabase.auth.signOut({ scope: 'others' })).error).toBeNull();
    expect([await alive(b), await alive(c)]).toEqual([true, false]);

    const d = await signIn(email);
    expect((await b.supabase.auth.signOut({ scope: 'global' })).error).toBeNull();
    expect([await alive(b), await alive(d)]).toEqual([false, false]);
  });

  it('ends every session of a user whose password changes (admin API and npm run user:add alike)', async () => {
    const { id, email } = await newAccount();
    const before = await signIn(email);
    const { error } = await admin().updateUserById(id, { password: 'a brand new password' });
    expect(error).toBeNull();
    expect((await client().auth.getUser(before.session.access_token)).error).toMatchObject({
      name: 'AuthSessionMissingError',
    });
    expect((await client().auth.refreshSession({ refresh_token: before.session.refresh_token })).error).toMatchObject({
      code: 'refresh_token_not_found',
    });
    expect((await client().auth.signInWithPassword({ email, password: PASSWORD })).error).toMatchObject({
      code: 'invalid_credentials',
    });

    const again = await signIn(email, 'a brand new password');
    await addUser(db.sql, { email, password: 'reset by an operator', role: 'member' });
    expect((await client().auth.getUser(again.session.access_token)).error).toMatchObject({
      name: 'AuthSessionMissingError',
    });
    await signIn(email, 'reset by an operator');
  });

  it('creates, updates, lists and deletes users with the service_role key', async () => {
    const email = `admin-made-${randomBytes(3).toString('hex')}@example.test`;
    const created = await admin().createUser({
      email,
      password: PASSWORD,
      email_confirm: true,
      app_metadata: { role: 'admin' },
      user_metadata: { name: 'Ada' },
    });
    expect(created.error).toBeNull();
    const user = created.data.user!;
    expect(user).toMatchObject({
      email,
      app_metadata: { provider: 'email', providers: ['email'], role: 'admin' },
      user_metadata: { name: 'Ada' },
    });
    const { session } = await signIn(email);
    expect(decodeJwt(session.access_token)).toMatchObject({ app_metadata: { role: 'admin' } });

    const duplicate = await admin().createUser({ email, password: PASSWORD });
    expect(duplicate.error).toMatchObject({
      status: 422,
      code: 'email_exists',
      message: 'A user with this email address has already been registered',
    });
    const weak = await admin().createUser({ email: `weak-${email}`, password: 'short' });
    expect(weak.error).toMatchObject({
      status: 422,
      code: 'weak_password',
      message: 'Password should be at least 12 characters.',
    });

    const updated = await admin().updateUserById(user.id, {
      app_metadata: { role: null },
      user_metadata: { team: 'ops' },
    });
    expect(updated.data.user).toMatchObject({
      app_metadata: { provider: 'email', providers: ['email'] },
      user_metadata: { name: 'Ada', team: 'ops' },
    });
    expect(updated.data.user!.app_metadata).not.toHaveProperty('role');

    const listed = await admin().listUsers({ page: 1, perPage: 1 });
    expect(listed.error).toBeNull();
    expect(listed.data.users).toHaveLength(1);
    const [count] = await db.sql<{ n: number }[]>`select count(*)::int as n from auth.users`;
    expect(listed.data).toMatchObject({ total: count!.n, nextPage: count!.n > 1 ? 2 : null, lastPage: count!.n });

    expect((await admin().deleteUser(user.id)).error).toBeNull();
    expect((await client().auth.getUser(session.access_token)).error).toMatchObject({
      status: 403,
      code: 'user_not_found',
    });
    expect((await admin().deleteUser(user.id)).error).toMatchObject({
      status: 404,
      code: 'user_not_found',
      message: 'User not found',
    });
  });

  it("refuses the admin API to the anon key, to a user's token and to a forged token", async () => {
    const { id, email } = await newAccount();
    const anon = await client().auth.admin.listUsers();
    expect(anon.error).toMatchObject({ status: 403, code: 'not_admin', message: 'User not allowed' });

    const { session } = await signIn(email);
    const asUser = createClient(server.url, anonKey, {
      auth: { persistSession: false, autoRefreshToken: false },
      global: { headers: { Authorization: `Bearer ${session.access_token}` } },
    });
    expect((await asUser.auth.admin.deleteUser(id)).error).toMatchObject({ status: 403, code: 'not_admin' });

    const forged = await signJwt(randomBytes(32).toString('hex'), { role: 'service_role' });
    const asForger = createClient(server.url, anonKey, {
      auth: { persistSession: false, autoRefreshToken: false },
      global: { headers: { Authorization: `Bearer ${forged}` } },
    });
    const refused = await asForger.auth.admin.createUser({ email: 'forger@example.test', password: PASSWORD });
    expect(refused.error).toMatchObject({ status: 403, code: 'bad_jwt' });
    expect(refused.error!.message).toMatch(/^invalid JWT: unable to parse or verify signature, /);
    // A forged key is refused at the gateway, before GoTrue.
    expect((await client(forged).auth.signInWithPassword({ email, password: PASSWORD })).error).toMatchObject({
      status: 401,
      message: 'Invalid API key',
    });
    const [row] = await db.sql`select 1 from auth.users where email = 'forger@example.test'`;
    expect(row).toBeUndefined();
    expect((await client().auth.getUser(session.access_token)).data.user?.id).toBe(id);
  });
});
