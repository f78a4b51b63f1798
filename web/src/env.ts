import { building } from '$app/env';
import { defineEnvVars } from '@sveltejs/kit/env';
import { z } from 'zod';

/**
 * Validates with `schema` when the server starts; an empty value counts as unset (`SENTRY_DSN=`).
 * SvelteKit also runs the server once during `vite build` (route analysis); the dashboard is built
 * once and configured where it runs, so values are not required then.
 */
function atRuntime<T>(schema: z.ZodType<T, string | undefined>) {
  return (value: string | undefined): T => {
    if (building) return undefined as T;
    const result = schema.safeParse(value === '' ? undefined : value);
    if (!result.success) throw new Error(result.error.issues.map((issue) => issue.message).join('; '));
    return result.data;
  };
}

/**
 * The dashboard's environment, validated with zod when the server starts (SvelteKit 3 reads this
 * file; a bad value stops the start with the variable's name and the problem).
 * Private values are importable only from server code (`$app/env/private`); PUBLIC_* values are
 * sent to the browser.
 */
export const variables = defineEnvVars({
  DATABASE_URL: {
    description:
      'Postgres the dashboard reads and writes as the signed-in user (SET ROLE + JWT claims, so RLS applies).',
    schema: atRuntime(z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')),
  },
  BFG_JWT_SECRET: {
    description:
      "The project JWT secret (legacy HS256), to verify access tokens without a round trip; unset: tokens are checked with auth.getClaims (the project's signing keys).",
    schema: atRuntime(z.string().min(32, 'must be at least 32 characters').optional()),
  },
  BFG_LOG_LEVEL: {
    description: 'pino level of the JSON log on stdout.',
    schema: atRuntime(z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info')),
  },
  SENTRY_DSN: {
    description: 'Report unexpected server errors to Sentry when set.',
    schema: atRuntime(z.url().optional()),
  },
  BFG_SUPABASE_SERVER_URL: {
    description:
      "Base URL this server uses for Supabase Auth (sign-in, refresh, sign-out) when the browser's PUBLIC_SUPABASE_URL is not reachable from where it runs (docker-compose.yml: http://kong:8000); unset: PUBLIC_SUPABASE_URL.",
    schema: atRuntime(z.url().optional()),
  },
  SUPABASE_SERVICE_ROLE_KEY: {
    description:
      "The project's service_role key, for the Users page (Supabase Auth's admin API: accounts, roles, passwords). Used by this server only, never sent to a browser; unset: the Users page says so and accounts are managed in Studio.",
    schema: atRuntime(z.string().min(20, 'must be the service_role key (a JWT)').optional()),
  },
  PUBLIC_SUPABASE_URL: {
    public: true,
    description:
      'Base URL supabase-js talks to: the local realtime server (http://127.0.0.1:54321) or https://<project>.supabase.co.',
    schema: atRuntime(z.url()),
  },
  PUBLIC_SUPABASE_ANON_KEY: {
    public: true,
    description: 'The anon (publishable) key; identifies the project, grants nothing RLS does not.',
    schema: atRuntime(z.string().min(20)),
  },
});
