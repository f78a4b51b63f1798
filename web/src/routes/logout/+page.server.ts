import { redirect } from '@sveltejs/kit';
import { auth, clearSessionCookies, readSessionCookies } from '#lib/server/auth/index.ts';
import type { Actions, PageServerLoad } from './$types';

export const load = (() => redirect(303, '/')) satisfies PageServerLoad;

export const actions = {
  default: async ({ cookies, url }) => {
    const stored = readSessionCookies(cookies);
    if (stored) await auth().signOut(stored);
    clearSessionCookies(cookies, url.protocol === 'https:');
    redirect(303, '/login');
  },
} satisfies Actions;
