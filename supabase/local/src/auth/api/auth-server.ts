import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Sql } from 'postgres';
import { verifyJwt } from '../../realtime/jwt.ts';
import { AuthApiError, sendError, sendJson } from './api-error.ts';
import type { AuthApiSettings, AuthRequest } from './context.ts';
import { header } from './request.ts';
import { adminUsers } from './routes/admin-users.ts';
import { logout } from './routes/logout.ts';
import { token } from './routes/token.ts';
import { getUser } from './routes/user.ts';

export interface AuthApiOptions {
  /** A superuser connection to the application database (the auth schema is the Auth API's own). */
  sql: Sql;
  /** The project's JWT secret (HS256), as Supabase's `JWT_SECRET`. */
  jwtSecret: string;
  /** Access-token lifetime (GoTrue's JWT_EXP; Supabase's default 3600 s). */
  accessTokenTtlS?: number;
  /**
   * How long a rotated refresh token may be presented again (GoTrue's
   * SECURITY_REFRESH_TOKEN_REUSE_INTERVAL; Supabase's default 10 s). Past it, reuse revokes the family.
   */
  refreshTokenReuseIntervalS?: number;
  log?: (message: string) => void;
}

/** Answers a request if it is one, false if the path is not under /auth/v1. */
export type HttpHandler = (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;

export const AUTH_PREFIX = '/auth/v1';
/** The API keys the gateway in front of Supabase Auth (Kong) accepts. */
const API_KEY_ROLES = new Set(['anon', 'service_role']);
const CORS = {
  'access-control-allow-origin': '*',
  'access-control-allow-headers': 'authorization, apikey, content-type, x-client-info, x-supabase-api-version',
  'access-control-allow-methods': 'GET, POST, PUT, DELETE, OPTIONS',
  'access-control-expose-headers': 'x-total-count, link, x-sb-error-code, x-supabase-api-version',
};

/**
 * The subset of the Supabase Auth (GoTrue) HTTP API that the unmodified supabase-js auth client
 * and its admin API need: password sign-in, refresh-token rotation, sign-out, the user, and admin
 * create/read/update/delete/list of users. Mounted beside /realtime/v1 on the realtime server's
 * port, so one `createClient(url, key)` serves both. As on Supabase, every request must carry an
 * `apikey` (the anon or service_role key), checked before GoTrue's own checks.
 */
export function createAuthApi(options: AuthApiOptions): HttpHandler {
  const settings: AuthApiSettings = {
    sql: options.sql,
    jwtSecret: options.jwtSecret,
    secret: new TextEncoder().encode(options.jwtSecret),
    accessTokenTtlS: options.accessTokenTtlS ?? 3600,
    refreshTokenReuseIntervalS: options.refreshTokenReuseIntervalS ?? 10,
    log: options.log ?? (() => undefined),
  };
  return async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname !== AUTH_PREFIX && !url.pathname.startsWith(`${AUTH_PREFIX}/`)) return false;
    for (const [name, value] of Object.entries(CORS)) res.setHeader(name, value);
    if (req.method === 'OPTIONS') {
      res.writeHead(204).end();
      return true;
    }
    const request: AuthRequest = {
      req,
      res,
      url,
      path: url.pathname.slice(AUTH_PREFIX.length).replace(/\/+$/, '') || '/',
      settings,
    };
    try {
      const keyError = await checkApiKey(req, url, settings.secret);
      if (keyError) {
        sendJson(res, 401, { message: keyError });
        return true;
      }
      await route(request);
    } catch (err) {
      if (res.headersSent) res.destroy();
      else sendError(res, err, header(req, 'x-supabase-api-version'), settings.log);
    }
    return true;
  };
}

/** Kong's key-auth in front of Supabase Auth: the project's anon or service_role key, with its texts. */
async function checkApiKey(req: IncomingMessage, url: URL, secret: Uint8Array): Promise<string | null> {
  const key = header(req, 'apikey') ?? url.searchParams.get('apikey') ?? undefined;
  if (!key) return 'No API key found in request';
  const verified = await verifyJwt(key, secret);
  return verified.ok && API_KEY_ROLES.has(verified.claims.role) ? null : 'Invalid API key';
}

async function route(request: AuthRequest): Promise<void> {
  const { path } = request;
  const method = request.req.method;
  if (path === '/token' && method === 'POST') return token(request);
  if (path === '/logout' && method === 'POST') return logout(request);
  if (path === '/user' && method === 'GET') return getUser(request);
  if (path === '/admin/users') return adminUsers(request, undefined);
  const user = /^\/admin\/users\/([^/]+)$/.exec(path);
  if (user) return adminUsers(request, decodeURIComponent(user[1]!));
  if (['/token', '/logout', '/user'].includes(path))
    throw new AuthApiError(405, 'validation_failed', 'Method not allowed');
  throw new AuthApiError(404, 'not_found', 'Not found');
}
