import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { getFreePort, startWebServer, type WebServer } from '@bfg/local';
import { startFakeGoTrue, type FakeGoTrue } from './support/fake-gotrue.ts';

// The dashboard with BFG_AUTH=supabase against a stand-in for Supabase Auth: sign-in, the session
// cookies, refresh-token rotation before the access token expires, RLS with those claims, sign-out.
const jwtSecret = randomBytes(32).toString('hex');
const admin = { email: 'supa-admin@e2e.test', password: randomBytes(12).toString('base64url'), admin: true };
let gotrue: FakeGoTrue;
let web: WebServer;

beforeAll(async () => {
  // Tokens live 4 minutes: under the dashboard's 5-minute refresh margin, so every request refreshes.
  gotrue = await startFakeGoTrue({ jwtSecret, users: [admin], ttlSeconds: 240 });
  web = await startWebServer({
    port: await getFreePort(),
    host: '127.0.0.1',
    databaseUrl: inject('e2eDatabaseUrl'),
    jwtSecret,
    realtimeUrl: gotrue.url,
    log: () => undefined,
    env: { PUBLIC_SUPABASE_URL: gotrue.url, SENTRY_DSN: '' },
  });
});
afterAll(async () => {
  await web?.stop();
  await gotrue?.close();
});

/** Cookies from a response's Set-Cookie headers, merged into `jar`. */
function keepCookies(jar: Map<string, string>, response: Response): void {
  for (const line of response.headers.getSetCookie()) {
    const [pair] = line.split(';');
    const [name, value] = pair!.split('=');
    if (value) jar.set(name!, value);
    else jar.delete(name!);
  }
}
const cookieHeader = (jar: Map<string, string>) => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');

describe('Supabase Auth mode (BFG_AUTH=supabase)', () => {
  it('signs in with Supabase Auth, refreshes the session before it expires, reads with RLS, and signs out', async () => {
    const jar = new Map<string, string>();
    const form = (fields: Record<string, string>) => ({
      method: 'POST',
      redirect: 'manual' as const,
      body: new URLSearchParams(fields),
      headers: {
        origin: web.url,
        accept: 'text/html',
        'content-type': 'application/x-www-form-urlencoded',
        cookie: cookieHeader(jar),
      },
    });

    const wrong = await fetch(`${web.url}/login`, form({ email: admin.email, password: 'not it' }));
    expect(wrong.status).toBe(400);
    // Supabase Auth's invalid_credentials, in the dashboard's words (the same locally and on Supabase).
    expect(await wrong.text()).toContain('Wrong e-mail or password.');

    const signedIn = await fetch(`${web.url}/login`, form({ email: admin.email, password: admin.password }));
    expect(signedIn.status, await signedIn.clone().text()).toBe(303);
    keepCookies(jar, signedIn);
    expect([...jar.keys()].sort()).toEqual(['bfg-access-token', 'bfg-refresh-token']);

    const firstRefresh = jar.get('bfg-refresh-token');
    const sites = await fetch(`${web.url}/`, { headers: { cookie: cookieHeader(jar) }, redirect: 'manual' });
    expect(sites.status).toBe(200);
    keepCookies(jar, sites);
    // As an admin (app_metadata.role from Supabase Auth's token), RLS shows the demo site.
    expect(await sites.text()).toContain('data-site-slug="demo"');
    expect(gotrue.refreshes).toBe(1);
    expect(jar.get('bfg-refresh-token')).not.toBe(firstRefresh);

    const token = await fetch(`${web.url}/auth/token`, { headers: { cookie: cookieHeader(jar) } });
    expect(token.status).toBe(200);
    keepCookies(jar, token);
    const { accessToken } = (await token.json()) as { accessToken: string };
    expect(JSON.parse(Buffer.from(accessToken.split('.')[1]!, 'base64url').toString('utf8'))).toMatchObject({
      email: admin.email,
      role: 'authenticated',
    });

    const signedOut = await fetch(`${web.url}/logout`, form({}));
    expect(signedOut.status).toBe(303);
    keepCookies(jar, signedOut);
    // Sign-out revokes the session at Supabase Auth with the user's current access token.
    expect(gotrue.logouts).toHaveLength(1);
    const revoked = gotrue.logouts[0]!.replace(/^Bearer /, '');
    expect(JSON.parse(Buffer.from(revoked.split('.')[1]!, 'base64url').toString('utf8'))).toMatchObject({
      email: admin.email,
    });
    const after = await fetch(`${web.url}/`, { headers: { cookie: cookieHeader(jar) }, redirect: 'manual' });
    expect(after.status).toBe(303);
    expect(after.headers.get('location')).toMatch(/^\/login/);
  });
});
