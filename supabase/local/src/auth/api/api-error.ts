import type { ServerResponse } from 'node:http';

/**
 * An error answered the way Supabase Auth (GoTrue, internal/api/apierrors) answers it: an HTTP
 * status, a stable `error_code` and GoTrue's message text, so supabase-js turns it into the same
 * AuthApiError (`status`, `code`, `message`) locally as on Supabase.
 */
export class AuthApiError extends Error {
  readonly status: number;
  readonly code: string;
  /** Fields GoTrue adds to some errors' bodies (weak_password reasons, OAuth error fields). */
  readonly extra: Record<string, unknown>;
  constructor(status: number, code: string, message: string, extra: Record<string, unknown> = {}) {
    super(message);
    this.name = 'AuthApiError';
    this.status = status;
    this.code = code;
    this.extra = extra;
  }
}

export const badRequest = (code: string, message: string) => new AuthApiError(400, code, message);
export const forbidden = (code: string, message: string) => new AuthApiError(403, code, message);
export const notFound = (code: string, message: string) => new AuthApiError(404, code, message);
export const unprocessable = (code: string, message: string) => new AuthApiError(422, code, message);

/** GoTrue's API-version header; supabase-js sends `2024-01-01`, which changes the error body's shape. */
const API_VERSION_HEADER = 'x-supabase-api-version';

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
}

/**
 * Writes an error as GoTrue's HandleResponseError does: `{ code: <error_code>, message }` for
 * clients that ask for API version 2024-01-01 or later (supabase-js), the initial
 * `{ code: <status>, error_code, msg }` otherwise, plus the `x-sb-error-code` header. Anything
 * that is not an AuthApiError is an unexpected failure whose details stay in the server log.
 */
export function sendError(
  res: ServerResponse,
  err: unknown,
  apiVersion: string | undefined,
  log: (m: string) => void,
): void {
  const known =
    err instanceof AuthApiError
      ? err
      : new AuthApiError(
          500,
          'unexpected_failure',
          'Unexpected failure, please check server logs for more information',
        );
  if (!(err instanceof AuthApiError))
    log(`auth: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  const versioned = apiVersion !== undefined && /^\d{4}-\d{2}-\d{2}$/.test(apiVersion) && apiVersion >= '2024-01-01';
  // OAuth-style errors (GoTrue's OAuthError) have a body of their own, the same in every version.
  const body =
    'error_description' in known.extra
      ? known.extra
      : versioned
        ? { code: known.code, message: known.message, ...known.extra }
        : { code: known.status, error_code: known.code, msg: known.message, ...known.extra };
  const headers: Record<string, string> = { 'x-sb-error-code': known.code };
  if (versioned) headers[API_VERSION_HEADER] = '2024-01-01';
  sendJson(res, known.status, body, headers);
}
