import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { LocalStackError, coerceError } from './errors.ts';

const run = promisify(execFile);

/** The unprivileged user Postgres runs as when we are root. */
export interface ServerUser {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
}

const NAME = 'postgres';

/**
 * Postgres refuses to run as root. Run as root, it runs as the `postgres` system user, created
 * (with its group, no home, no login shell) if missing; run as anyone else, as yourself (null).
 */
export async function serverUser(): Promise<ServerUser | null> {
  if (process.getuid?.() !== 0) return null;
  const existing = await lookUp();
  if (existing) return existing;
  try {
    await run('groupadd', ['--system', NAME]).catch((err: { code?: unknown }) => {
      // 9: the group exists already (a user was removed but not its group).
      if (err.code !== 9) throw err;
    });
    await run('useradd', [
      '--system',
      '--gid',
      NAME,
      '--no-create-home',
      '--home-dir',
      '/nonexistent',
      '--shell',
      '/usr/sbin/nologin',
      NAME,
    ]);
  } catch (err) {
    throw new LocalStackError(
      `Postgres cannot run as root and creating the "${NAME}" system user failed (${coerceError(err).message.split('\n')[0]}). ` +
        `Create it yourself (useradd --system ${NAME}) or run as another user.`,
      { cause: err },
    );
  }
  const created = await lookUp();
  if (!created)
    throw new LocalStackError(`The "${NAME}" system user was created but cannot be looked up (id -u ${NAME}).`);
  return created;
}

async function lookUp(): Promise<ServerUser | null> {
  try {
    const [uid, gid] = await Promise.all([run('id', ['-u', NAME]), run('id', ['-g', NAME])]);
    return { name: NAME, uid: Number.parseInt(uid.stdout, 10), gid: Number.parseInt(gid.stdout, 10) };
  } catch {
    return null;
  }
}

/**
 * Whether `user` can enter `dir` — every directory above it included — asked of the system as
 * that user (`test -x` in a shell run with its uid and gid, as the server will be), so modes,
 * ownership and ACLs all count.
 */
export function canReach(dir: string, user: ServerUser): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn('/bin/sh', ['-c', 'test -d "$1" && test -x "$1"', 'sh', dir], {
      uid: user.uid,
      gid: user.gid,
      stdio: 'ignore',
    });
    child.once('error', () => resolve(false));
    child.once('exit', (code) => resolve(code === 0));
  });
}
