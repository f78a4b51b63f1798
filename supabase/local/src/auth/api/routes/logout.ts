import { endSessions } from '../../sessions.ts';
import { badRequest } from '../api-error.ts';
import { requireUser } from '../bearer.ts';
import type { AuthRequest } from '../context.ts';

/**
 * POST /logout?scope=global|local|others (GoTrue's Logout): ends every session of the user, the
 * token's own, or all but it. A token without a session_id ends them all, as in GoTrue.
 */
export async function logout(request: AuthRequest): Promise<void> {
  const scope = request.url.searchParams.get('scope') ?? '';
  if (!['', 'global', 'local', 'others'].includes(scope))
    throw badRequest('validation_failed', `Unsupported logout scope "${scope}"`);
  await request.settings.sql.begin(async (tx) => {
    const { user, sessionId } = await requireUser(tx, request);
    if (sessionId && scope === 'local') await endSessions(tx, { userId: user.id, only: sessionId });
    else if (sessionId && scope === 'others') await endSessions(tx, { userId: user.id, except: sessionId });
    else await endSessions(tx, { userId: user.id });
  });
  request.res.writeHead(204).end();
}
