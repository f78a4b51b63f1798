import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/**
 * A fresh directory under the system temp dir, traversable by other users: when the tests run as
 * root, Postgres runs as the `postgres` user and must reach the data directory inside it.
 */
export async function makeTempDir(prefix: string): Promise<{ path: string; remove(): Promise<void> }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `bfg-${prefix}-`));
  await fs.chmod(dir, 0o755);
  return { path: dir, remove: () => fs.rm(dir, { recursive: true, force: true }) };
}
