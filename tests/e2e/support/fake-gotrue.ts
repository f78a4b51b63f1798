import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT } from 'jose';

export interface FakeGoTrue {
  url: string;
  /** Refresh-token grants answered so far. */
  refreshes: number;
  /** Sign-outs (POST /auth/v1/logout) received, with the bearer token they carried. */
  logouts: string[];
  close(): Promise<void>;
}

/**
 * A stand-in for Supabase Auth (GoTrue) on loopback — the three endpoints the dashboard's
 * Supabase mode calls: password sign-in, refresh-token rotation and sign-out. Tokens are HS256
 * with Supabase Auth's claims, `ttlSeconds` long, so a test can watch them being refreshed.
 */
export async function startFakeGoTrue(options: {
  jwtSecret: string;
  users: { email: string; password: string; admin?: boolean }[];
  ttlSeconds: number;
}): Promise<FakeGoTrue> {
  const ids = new Map(options.users.map((u) => [u.email, randomUUID()]));
  const refreshTokens = new Map<string, string>();
  const state = { refreshes: 0, logouts: [] as string[] };

  const issue = async (email: string) => {
    const user = options.users.find((u) => u.email === email)!;
    const now = Math.floor(Date.now() / 1000);
    const appMetadata = { provider: 'email', providers: ['email'], ...(user.admin ? { role: 'admin' } : {}) };
    const accessToken = await new SignJWT({
      aud: 'authenticated',
      role: 'authenticated',
      email,
      app_metadata: appMetadata,
      user_metadata: {},
      session_id: randomUUID(),
    })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(ids.get(email)!)
      .setIssuedAt(now)
      .setExpirationTime(now + options.ttlSeconds)
      .sign(new TextEncoder().encode(options.jwtSecret));
    const refreshToken = randomBytes(16).toString('hex');
    refreshTokens.set(refreshToken, email);
    return {
      access_token: accessToken,
      token_type: 'bearer',
      expires_in: options.ttlSeconds,
      expires_at: now + options.ttlSeconds,
      refresh_token: refreshToken,
      user: {
        id: ids.get(email),
        aud: 'authenticated',
        role: 'authenticated',
        email,
        app_metadata: appMetadata,
        user_metadata: {},
        created_at: new Date().toISOString(),
      },
    };
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        const url = new URL(req.url ?? '/', 'http://x');
        const body = chunks.length
          ? (JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, string>)
          : {};
        const reply = (status: number, json: unknown) => {
          res.writeHead(status, { 'content-type': 'application/json' });
          res.end(JSON.stringify(json));
        };
        if (url.pathname === '/auth/v1/token' && url.searchParams.get('grant_type') === 'password') {
          const user = options.users.find((u) => u.email === body['email'] && u.password === body['password']);
          return user
            ? reply(200, await issue(user.email))
            : reply(400, { code: 400, error_code: 'invalid_credentials', msg: 'Invalid login credentials' });
        }
        if (url.pathname === '/auth/v1/token' && url.searchParams.get('grant_type') === 'refresh_token') {
          const email = refreshTokens.get(body['refresh_token'] ?? '');
          if (!email)
            return reply(400, {
              code: 400,
              error_code: 'refresh_token_not_found',
              msg: 'Invalid Refresh Token: Refresh Token Not Found',
            });
          refreshTokens.delete(body['refresh_token']!); // rotation: a refresh token works once
          state.refreshes += 1;
          return reply(200, await issue(email));
        }
        if (url.pathname === '/auth/v1/logout') {
          state.logouts.push(String(req.headers.authorization ?? ''));
          res.writeHead(204);
          return res.end();
        }
        reply(404, { msg: 'not found' });
      })();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    get refreshes() {
      return state.refreshes;
    },
    logouts: state.logouts,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
