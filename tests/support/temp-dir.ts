import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/**
 * A fresh directory under the system temp dir, traversable by other users: when the tests run as
 * root, Postgres runs as the `postgres` user and must reach the data directory inside it. Were
 * the temp dir itself hidden from others (TMPDIR inside a mode-700 directory), the cluster would
 * go to /var/lib/bfg/clusters behind a symlink and outlive `remove()`; /tmp is used then.
 */
export async function makeTempDir(prefix: string): Promise<{ path: string; remove(): Promise<void> }> {
  const base = process.getuid?.() === 0 && !(await traversableByOthers(os.tmpdir())) ? '/tmp' : os.tmpdir();
  const dir = await fs.mkdtemp(path.join(base, `bfg-${prefix}-`));
  await fs.chmod(dir, 0o755);
  return { path: dir, remove: () => fs.rm(dir, { recursive: true, force: true }) };
}

async function traversableByOthers(dir: string): Promise<boolean> {
  for (let at = await fs.realpath(dir); ; at = path.dirname(at)) {
    if (((await fs.stat(at)).mode & 0o001) === 0) return false;
    if (path.dirname(at) === at) return true;
  }
}
