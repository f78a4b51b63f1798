import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Sql } from 'postgres';
import type { ClientInfo } from '../sessions.ts';
import { header } from './request.ts';

export interface AuthApiSettings {
  /** The superuser pool; the Auth API owns the auth schema, RLS does not apply to it. */
  sql: Sql;
  /** The project's JWT secret (HS256) as bytes. */
  secret: Uint8Array;
  jwtSecret: string;
  /** GoTrue's JWT_EXP. */
  accessTokenTtlS: number;
  /** GoTrue's SECURITY_REFRESH_TOKEN_REUSE_INTERVAL. */
  refreshTokenReuseIntervalS: number;
  log: (message: string) => void;
}

/** One request to /auth/v1: `path` is what follows the prefix ("/token", "/admin/users/…"). */
export interface AuthRequest {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  path: string;
  settings: AuthApiSettings;
}

/** User agent and address, recorded on the session as GoTrue records them. */
export function clientInfo(req: IncomingMessage): ClientInfo {
  return { userAgent: header(req, 'user-agent'), ip: req.socket.remoteAddress?.replace(/^::ffff:/, '') };
}
