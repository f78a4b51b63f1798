import type { IncomingMessage } from 'node:http';
import type { z } from 'zod';
import { AuthApiError, badRequest } from './api-error.ts';

/** GoTrue's limitRequestBody(1 << 20). */
const MAX_BODY_BYTES = 1 << 20;

/** The raw body, refused past 1 MiB as GoTrue refuses it (413 request_entity_too_large). */
export async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) {
      throw new AuthApiError(413, 'request_entity_too_large', `Request body too large (max ${MAX_BODY_BYTES} bytes)`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * The JSON body checked against `schema`. Unparsable JSON is GoTrue's `bad_json`; a body of the
 * wrong shape (GoTrue's json.Unmarshal into a typed struct, or a failed Validate) `validation_failed`.
 * An empty body counts as `{}`, as GoTrue's DELETE /admin/users/{id} accepts it.
 */
export async function parseBody<S extends z.ZodType>(req: IncomingMessage, schema: S): Promise<z.output<S>> {
  const text = await readBody(req);
  let json: unknown = {};
  if (text.trim() !== '') {
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw badRequest('bad_json', `Could not parse request body as JSON: ${(err as Error).message}`);
    }
  }
  return parseWith(schema, json);
}

export function parseWith<S extends z.ZodType>(schema: S, value: unknown): z.output<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const where = issue.path.length > 0 ? `${issue.path.join('.')}: ` : '';
  throw badRequest('validation_failed', `${where}${issue.message}`);
}

/** A header's first value. */
export function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}
