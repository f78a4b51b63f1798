import type { z } from 'zod';

/**
 * Parses environment variables with a zod object schema. An empty variable counts as unset (as in
 * a .env file with `X=`). Fails with one message naming every bad variable and the problem —
 * never the value, which may be a password.
 */
export function parseEnv<S extends z.ZodType>(
  schema: S,
  env: NodeJS.ProcessEnv,
  makeError: (message: string) => Error,
): z.infer<S> {
  const present = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== ''));
  const parsed = schema.safeParse(present);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => `  ${issue.path.join('.')}: ${issue.message}`);
    throw makeError(`Invalid environment variables:\n${lines.join('\n')}`);
  }
  return parsed.data;
}
