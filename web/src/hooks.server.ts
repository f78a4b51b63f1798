import { randomUUID } from 'node:crypto';
import * as Sentry from '@sentry/sveltekit';
import { redirect } from '@sveltejs/kit';
import type { Handle, HandleServerError, ServerInit } from '@sveltejs/kit/hooks';
import { building } from '$app/env';
import { SENTRY_DSN } from '$app/env/private';
import { auth, clearSessionCookies, readSessionCookies, writeSessionCookies } from '#lib/server/auth/index.ts';
import { logger } from '#lib/server/logger.ts';

export const init: ServerInit = () => {
  // Configuration problems stop the start, not each request.
  if (!building) auth();
  if (SENTRY_DSN) Sentry.init({ dsn: SENTRY_DSN, sendDefaultPii: false, tracesSampleRate: 0 });
};

/** Pages anyone may open; everything else needs a session. */
const PUBLIC_PATHS = new Set(['/login']);

export const handle: Handle = async ({ event, resolve }) => {
  const started = performance.now();
  const stored = readSessionCookies(event.cookies);
  event.locals.session = null;
  if (stored) {
    const resumed = await auth().resume(stored);
    if (resumed) {
      event.locals.session = resumed.session;
      if (resumed.cookies) writeSessionCookies(event.cookies, resumed.cookies, event.url.protocol === 'https:');
    } else {
      clearSessionCookies(event.cookies, event.url.protocol === 'https:');
    }
  }
  if (!event.locals.session && !PUBLIC_PATHS.has(event.url.pathname)) {
    if (
      event.request.method !== 'GET' ||
      event.url.pathname.startsWith('/api/') ||
      event.url.pathname.startsWith('/auth/')
    ) {
      return new Response(JSON.stringify({ message: 'Sign in first.' }), {
        status: 401,
        headers: { 'content-type': 'application/json' },
      });
    }
    redirect(303, `/login?next=${encodeURIComponent(event.url.pathname + event.url.search)}`);
  }
  const response = await resolve(event);
  response.headers.set('x-content-type-options', 'nosniff');
  response.headers.set('referrer-policy', 'same-origin');
  // How long this server took, sign-in check, loads and rendering included (`npm run bench:pages`
  // reads it; so can a browser's network panel).
  response.headers.set('server-timing', `app;dur=${(performance.now() - started).toFixed(1)}`);
  return response;
};

/**
 * Unexpected errors: logged with an id (and sent to Sentry when SENTRY_DSN is set); the page gets
 * only a generic message and that id. Expected ones (error(404, …), fail(400, …)) never come here.
 */
export const handleError: HandleServerError = ({ kind, error, event }) => {
  if (kind !== 'unknown') return;
  const id = randomUUID();
  logger.error({ err: error, errorId: id, path: event.url.pathname, method: event.request.method }, 'unexpected error');
  if (SENTRY_DSN) Sentry.captureException(error, { tags: { errorId: id }, extra: { path: event.url.pathname } });
  return { message: 'Something went wrong on our side.', id };
};
