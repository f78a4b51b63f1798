import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addUser,
  createAuthApi,
  getFreePort,
  listMigrations,
  mintAnonKey,
  mintServiceRoleKey,
  repoRoot,
  schemaPaths,
  startRealtimeServer,
  type RealtimeServer,
} from '@bfg/local';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import {
  exampleValues,
  execArgs,
  execForm,
  interpolateDocument,
  last,
  readCompose,
  readDockerfile,
  stage,
  stageEnv,
  type ComposeService,
} from '../support/deployment.ts';
import { newConnection, newSite } from '../support/factories.ts';
import { waitForStatus } from '../support/ingestor.ts';
import { startMosquitto, type RunningMosquitto } from '../support/mosquitto.ts';
import { makeTempDir } from '../support/temp-dir.ts';
import { waitFor } from '../support/wait-for.ts';

/**
 * The migrate job, the ingestor and the dashboard started as docker-compose.yml starts them —
 * the compose command or the Dockerfile's CMD, from the image's working directory (the repository
 * root here), with exactly the variables of the compose file's `environment` on top of the
 * image's ENV, nothing inherited — but pointed at this machine's test stack: an empty Postgres
 * database, a real Mosquitto with a password, the local Auth API. Each is judged healthy by
 * running the compose file's own health check command, and stopped with SIGTERM, as `docker stop`
 * does. What this cannot show without a container engine: the images building, the Supabase
 * services, Kong.
 */

const compose = interpolateDocument(readCompose(), exampleValues());

/** A service's process as its image runs it: the image's ENV, then compose's environment with `overrides`. */
function imageProcess(name: string, overrides: Record<string, string>) {
  const service: ComposeService = compose.services[name]!;
  const dockerfile = readDockerfile(service.build!.dockerfile!);
  const final = stage(dockerfile, service.build?.target);
  const composeEnv = Object.fromEntries(
    Object.entries(service.environment ?? {}).map(([key, value]) => [key, value === null ? '' : String(value)]),
  );
  // Only names compose gives may be overridden: the test runs the same variables, other values.
  expect(Object.keys(overrides).filter((key) => !(key in composeEnv))).toEqual([]);
  const env = { ...stageEnv(dockerfile, final), ...composeEnv, ...overrides };
  const command = service.command ? execForm(service.command, `${name} command`) : execArgs(last(final, 'CMD')!, '');
  const healthcheck = service.healthcheck ? execForm(service.healthcheck.test, `${name} healthcheck`) : undefined;
  return { env, command, healthcheck };
}

interface Child {
  process: ChildProcess;
  output: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

/** Runs `node …` (an image's command) with only `env`, from the repository root. */
function start(command: string[], env: Record<string, string>): Child {
  expect(command[0]).toBe('node');
  const child = spawn(process.execPath, command.slice(1), { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const output: string[] = [];
  child.stdout.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  return { process: child, output, exited };
}

/** Runs a compose health check (`CMD` form) with the service's environment; true when it exits 0. */
async function healthy(test: string[] | undefined, env: Record<string, string>): Promise<boolean> {
  expect(test?.[0]).toBe('CMD');
  const check = start(test!.slice(1), env);
  const { code } = await check.exited;
  return code === 0;
}

async function stopAsDockerDoes(child: Child, graceSeconds: number) {
  child.process.kill('SIGTERM');
  const timer = setTimeout(() => child.process.kill('SIGKILL'), graceSeconds * 1000);
  const result = await child.exited;
  clearTimeout(timer);
  return result;
}

describe('the services as the images run them', () => {
  let db: TestDatabase;
  let broker: RunningMosquitto;
  let auth: RealtimeServer;
  let logs: { path: string; remove(): Promise<void> };
  const jwtSecret = randomBytes(32).toString('hex');

  beforeAll(async () => {
    db = await createTestDatabase({ empty: true });
    broker = await startMosquitto({ users: { bfg: 'broker-password' }, persistence: true });
    logs = await makeTempDir('deployment-logs');
  });

  afterAll(async () => {
    for (const child of children) child.kill('SIGKILL');
    await auth?.close();
    await broker?.stop();
    await logs?.remove();
    await db?.drop();
  });

  it('migrate applies every migration to an empty database without the demo data, exits 0, and again finds nothing to do', async () => {
    const migrate = imageProcess('migrate', { DATABASE_URL: db.url });
    const first = start(migrate.command, migrate.env);
    expect(await first.exited, first.output.join('')).toEqual({ code: 0, signal: null });
    const [{ count }] = (await db.sql`select count(*)::int as count from supabase_migrations.schema_migrations`) as [
      { count: number },
    ];
    expect(count).toBe((await listMigrations(schemaPaths.migrationsDir)).length);
    expect(await db.sql`select slug from site`).toEqual([]);
    const again = start(migrate.command, migrate.env);
    expect(await again.exited).toEqual({ code: 0, signal: null });
    expect(again.output.join('')).toContain('no new migrations');
  });

  it('the ingestor becomes healthy with its connection up, and on SIGTERM writes what it has and exits 0', async () => {
    const site = await newSite(db.sql);
    const connection = await newConnection(db.sql, site.id, { port: broker.port });
    await db.sql`update mqtt_connection set username = 'bfg', is_active = true where id = ${connection.id}`;
    await db.sql`select set_mqtt_connection_secret(${connection.id}, 'broker-password')`;

    const ingestor = imageProcess('ingestor', {
      DATABASE_URL: db.url,
      BFG_HTTP_PORT: String(await getFreePort()),
      // 0.0.0.0 in a container; here only loopback.
      BFG_HTTP_HOST: '127.0.0.1',
      BFG_LOG_DIR: logs.path,
    });
    const child = start(ingestor.command, ingestor.env);
    await waitForStatus(db.sql, connection.id, 'connected', { timeoutMs: 20_000 });
    await waitFor('the ingestor health check to pass', () => healthy(ingestor.healthcheck, ingestor.env), {
      timeoutMs: 20_000,
      intervalMs: 250,
    });
    expect(await stopAsDockerDoes(child, 30), child.output.join('')).toEqual({ code: 0, signal: null });
    expect(child.output.join('')).toContain('"msg":"stopped"');
    // The connection log and its file were written where compose puts them (a volume).
    expect(fs.readdirSync(logs.path).some((file) => file.startsWith('connections'))).toBe(true);
  });

  it('the dashboard becomes healthy, signs in through BFG_SUPABASE_SERVER_URL, and exits 0 on SIGTERM', async () => {
    const build = path.join(repoRoot, 'web', 'build', 'handler.js');
    if (!fs.existsSync(build)) throw new Error('web/build is missing: run `npm run build -w @bfg/web` first');
    auth = await startRealtimeServer({
      port: await getFreePort(),
      jwtSecret,
      sql: db.sql,
      databaseUrl: db.url,
      httpHandler: createAuthApi({ sql: db.sql, jwtSecret }),
    });
    const email = `admin-${randomBytes(3).toString('hex')}@example.com`;
    const password = randomBytes(12).toString('base64url');
    await addUser(db.sql, { email, password, role: 'admin', sites: [] });

    const port = await getFreePort();
    const dashboard = imageProcess('dashboard', {
      DATABASE_URL: db.url,
      BFG_JWT_SECRET: jwtSecret,
      BFG_SUPABASE_SERVER_URL: auth.url,
      // The browser's address of Kong, which this server must not need: nothing listens there.
      PUBLIC_SUPABASE_URL: `http://127.0.0.1:${await getFreePort()}`,
      PUBLIC_SUPABASE_ANON_KEY: await mintAnonKey(jwtSecret),
      SUPABASE_SERVICE_ROLE_KEY: await mintServiceRoleKey(jwtSecret),
      HOST: '127.0.0.1',
      PORT: String(port),
    });
    const child = start(dashboard.command, dashboard.env);
    await waitFor('the dashboard health check to pass', () => healthy(dashboard.healthcheck, dashboard.env), {
      timeoutMs: 20_000,
      intervalMs: 250,
    });

    const origin = `http://127.0.0.1:${port}`;
    const signIn = await fetch(`${origin}/login`, {
      method: 'POST',
      redirect: 'manual',
      // As a browser's form post (no JavaScript): SvelteKit answers it with a redirect.
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'text/html', origin },
      body: new URLSearchParams({ email, password }),
    });
    expect(signIn.status, await signIn.clone().text()).toBe(303);
    const cookies = signIn.headers
      .getSetCookie()
      .map((cookie) => cookie.split(';')[0])
      .join('; ');
    const home = await fetch(`${origin}/`, { headers: { cookie: cookies }, redirect: 'manual' });
    expect(home.status).toBe(200);
    // The Users page: the Auth admin API, from this server with the service_role key, also through
    // BFG_SUPABASE_SERVER_URL.
    const users = await fetch(`${origin}/admin/users`, { headers: { cookie: cookies }, redirect: 'manual' });
    const usersPage = await users.text();
    expect(users.status, usersPage).toBe(200);
    expect(usersPage).toContain(email);
    expect(usersPage).not.toContain('accounts-unavailable');

    expect(await stopAsDockerDoes(child, 15), child.output.join('')).toEqual({ code: 0, signal: null });
  });
});
