import { z } from 'zod';
import { adminUserParamsSchema, createUser, deleteUser, listUsers, loadUser, updateUser } from '../../users.ts';
import { userJson } from '../../user-records.ts';
import { AuthApiError, badRequest, sendJson } from '../api-error.ts';
import { requireAdmin } from '../bearer.ts';
import type { AuthRequest } from '../context.ts';
import { parseBody } from '../request.ts';

const DEFAULT_PER_PAGE = 50;
const pageNumber = z.string().regex(/^\d+$/, 'strconv.ParseUint: parsing: invalid syntax').transform(Number);
const deleteSchema = z.object({ should_soft_delete: z.boolean().optional() });

/** /admin/users and /admin/users/{id}, for the service_role key only (GoTrue's admin.go). */
export async function adminUsers(request: AuthRequest, userId: string | undefined): Promise<void> {
  const { sql } = request.settings;
  const method = request.req.method;
  await sql.begin((tx) => requireAdmin(tx, request));
  if (userId === undefined && method === 'GET') return list(request);
  if (userId === undefined && method === 'POST') {
    const params = await parseBody(request.req, adminUserParamsSchema);
    return sendJson(request.res, 200, userJson(await sql.begin((tx) => createUser(tx, params))));
  }
  if (userId !== undefined && method === 'GET')
    return sendJson(request.res, 200, userJson(await sql.begin((tx) => loadUser(tx, userId))));
  if (userId !== undefined && method === 'PUT') {
    const params = await parseBody(request.req, adminUserParamsSchema);
    return sendJson(request.res, 200, userJson(await sql.begin((tx) => updateUser(tx, userId, params))));
  }
  if (userId !== undefined && method === 'DELETE') {
    const params = await parseBody(request.req, deleteSchema);
    // Soft deletion (obfuscated identifiers kept for audit) is not served by the stand-in.
    if (params.should_soft_delete)
      throw badRequest('validation_failed', 'Soft deletion is not supported by the local Auth API');
    await sql.begin((tx) => deleteUser(tx, userId));
    return sendJson(request.res, 200, {});
  }
  throw new AuthApiError(405, 'validation_failed', 'Method not allowed');
}

/** GET /admin/users?page=&per_page=, with GoTrue's Link and X-Total-Count headers (supabase-js reads both). */
async function list(request: AuthRequest): Promise<void> {
  const query = request.url.searchParams;
  const parse = (name: string, fallback: number) => {
    const value = query.get(name);
    if (value === null || value === '') return fallback;
    const parsed = pageNumber.safeParse(value);
    if (!parsed.success)
      throw badRequest(
        'validation_failed',
        `Bad Pagination Parameters: strconv.ParseUint: parsing "${value}": invalid syntax`,
      );
    return parsed.data;
  };
  const page = Math.max(1, parse('page', 1));
  const perPage = parse('per_page', DEFAULT_PER_PAGE);
  const { users, total } = await request.settings.sql.begin((tx) => listUsers(tx, page, perPage));
  const totalPages = perPage > 0 ? Math.ceil(total / perPage) : 0;
  const link = (p: number) => {
    const url = new URL(request.url);
    url.searchParams.set('page', String(p));
    return `${url.pathname}${url.search}`;
  };
  const links = [
    ...(totalPages > page ? [`<${link(page + 1)}>; rel="next"`] : []),
    `<${link(totalPages)}>; rel="last"`,
  ];
  sendJson(
    request.res,
    200,
    { users: users.map(userJson), aud: 'authenticated' },
    { link: links.join(', '), 'x-total-count': String(total) },
  );
}
