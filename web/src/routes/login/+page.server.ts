import { fail, redirect } from '@sveltejs/kit';
import { z } from 'zod';
import { auth, writeSessionCookies } from '#lib/server/auth/index.ts';
import { recordSignInFailure, signInBlockedFor } from '#lib/server/auth/sign-in-limiter.ts';
import { fieldErrors, formFields, type FieldErrors } from '#lib/server/form.ts';
import type { Actions, PageServerLoad } from './$types';

const signInSchema = z.object({
  email: z.email('Enter your e-mail address').max(320),
  password: z.string().min(1, 'Enter your password').max(1024),
  next: z.string().optional(),
});

/** Only same-site paths: `next` must not turn the sign-in page into an open redirect. */
function safeNext(next: string | undefined, origin: string): string {
  if (!next) return '/';
  const target = new URL(next, origin);
  return target.origin === origin ? target.pathname + target.search + target.hash : '/';
}

const noErrors: FieldErrors = {};

export const load = (({ locals, url }) => {
  if (locals.session) redirect(303, safeNext(url.searchParams.get('next') ?? undefined, url.origin));
  return {};
}) satisfies PageServerLoad;

export const actions = {
  default: async ({ request, cookies, url, getClientAddress }) => {
    const form = await formFields(request);
    const parsed = signInSchema.safeParse(form);
    const email = form['email'] ?? '';
    if (!parsed.success) return fail(400, { email, errors: fieldErrors(parsed.error), message: null as string | null });
    const client = getClientAddress();
    const waitMinutes = signInBlockedFor(parsed.data.email, client);
    if (waitMinutes > 0) {
      return fail(429, {
        email,
        errors: noErrors,
        message: `Too many failed sign-ins. Try again in ${waitMinutes} minute(s).`,
      });
    }
    const result = await auth().signIn(parsed.data.email, parsed.data.password);
    if (!result.ok) {
      recordSignInFailure(parsed.data.email, client);
      return fail(400, { email, errors: noErrors, message: result.message });
    }
    writeSessionCookies(cookies, result.cookies, url.protocol === 'https:');
    redirect(303, safeNext(parsed.data.next, url.origin));
  },
} satisfies Actions;
