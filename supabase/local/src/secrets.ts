import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { LocalStackError } from './errors.ts';

const secretsSchema = z.object({
  /** Password of the embedded cluster's `postgres` superuser. */
  postgresPassword: z.string().min(16),
  /** The project's JWT secret (HS256), as Supabase's JWT_SECRET: signs the anon key and user tokens. */
  jwtSecret: z.string().min(32),
});

export type LocalSecrets = z.infer<typeof secretsSchema>;

/**
 * Secrets of the local stack, generated on first start and kept in `<dataDir>/secrets.json`
 * (mode 600, git-ignored with the rest of `.data/`). Nothing ships with a default password.
 */
export async function loadOrCreateSecrets(dataDir: string): Promise<LocalSecrets> {
  const file = path.join(dataDir, 'secrets.json');
  let text: string | undefined;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new LocalStackError(`Cannot read ${file}: ${(err as Error).message}`, { cause: err });
    }
  }
  const generated: LocalSecrets = {
    postgresPassword: randomBytes(24).toString('base64url'),
    jwtSecret: randomBytes(32).toString('base64url'),
  };
  if (text !== undefined) {
    // Secrets added by later versions are generated once and kept alongside the existing ones.
    const parsed = secretsSchema.safeParse({ ...generated, ...(JSON.parse(text) as object) });
    if (!parsed.success) {
      throw new LocalStackError(`${file} is not a valid secrets file; remove it to generate new secrets.`);
    }
    if (JSON.stringify(parsed.data) !== text.trim())
      await fs.writeFile(file, JSON.stringify(parsed.data, null, 2) + '\n', { mode: 0o600 });
    return parsed.data;
  }
  const secrets = generated;
  await fs.mkdir(dataDir, { recursive: true });
  await fs.writeFile(file, JSON.stringify(secrets, null, 2) + '\n', { mode: 0o600 });
  return secrets;
}
