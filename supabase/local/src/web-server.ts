import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { mintAnonKey, mintServiceRoleKey } from './auth/tokens.ts';
import { LocalStackError } from './errors.ts';
import { repoRoot } from './paths.ts';
import { isPortFree } from './port.ts';

/** The built dashboard's request handler (adapter-node output of `npm run build -w @bfg/web`). */
export const webBuildEntry = path.join(repoRoot, 'web', 'build', 'handler.js');
/** The dashboard's production entry (serves the build; see web/server.js for why not build/index.js). */
export const webServerEntry = path.join(repoRoot, 'web', 'server.js');

export interface WebServerOptions {
  port: number;
  host: string;
  databaseUrl: string;
  jwtSecret: string;
  /** Base URL of the realtime server, which supabase-js in the browser connects to. */
  realtimeUrl: string;
  log: (message: string) => void;
  /** Give up waiting for the server to answer after this long. */
  startTimeoutMs?: number;
  /** Variables that override the local-stack ones (e.g. another PUBLIC_SUPABASE_URL). */
  env?: Record<string, string>;
}

export interface WebServer {
  readonly url: string;
  stop(): Promise<void>;
}

/**
 * Runs the built dashboard as a child process — the way it runs in production (`node build`) —
 * configured for the local stack: local accounts, tokens signed with the stack's JWT secret,
 * supabase-js pointed at the local realtime server, the service_role key for the Users page. Resolves once it answers HTTP.
 */
export async function startWebServer(options: WebServerOptions): Promise<WebServer> {
  if (!existsSync(webBuildEntry)) {
    throw new LocalStackError(
      'The dashboard is not built. Run `npm run build -w @bfg/web` (`npm start` does this first).',
    );
  }
  // The child would only say so in a stack trace among its output.
  if (!(await isPortFree(options.port, options.host))) {
    throw new LocalStackError(
      `Port ${options.port} on ${options.host} is already in use, so the dashboard cannot listen there. ` +
        `Stop whatever uses it or choose another port (BFG_WEB_PORT).`,
    );
  }
  const url = `http://${options.host.includes(':') ? `[${options.host}]` : options.host}:${options.port}`;
  const child = spawn(process.execPath, [webServerEntry], {
    cwd: path.dirname(webServerEntry),
    env: {
      ...process.env,
      PORT: String(options.port),
      HOST: options.host,
      DATABASE_URL: options.databaseUrl,
      BFG_JWT_SECRET: options.jwtSecret,
      PUBLIC_SUPABASE_URL: options.realtimeUrl,
      PUBLIC_SUPABASE_ANON_KEY: await mintAnonKey(options.jwtSecret),
      // The dashboard's Users page calls the Auth admin API (the stand-in's /auth/v1/admin/users)
      // with it, from the server only: it is a private variable, never sent to a browser.
      SUPABASE_SERVICE_ROLE_KEY: await mintServiceRoleKey(options.jwtSecret),
      ...options.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  for (const stream of [child.stdout, child.stderr]) {
    readline.createInterface({ input: stream }).on('line', (line) => {
      options.log(`web: ${line}`);
    });
  }
  // 'error' (it could not be spawned at all) comes instead of 'exit', which must still settle.
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.once('error', (err) => {
      options.log(`web: cannot run ${process.execPath}: ${err.message}`);
      resolve(null);
    });
  });
  try {
    await waitUntilServing(url, exited, options.startTimeoutMs ?? 20_000);
  } catch (err) {
    await stopChild(child, exited);
    // Its output went to options.log line by line; the error only says what failed.
    throw new LocalStackError(
      `The dashboard did not start: ${(err as Error).message}. See its output above (lines "web: …").`,
      { cause: err },
    );
  }
  return { url, stop: () => stopChild(child, exited) };
}

async function waitUntilServing(url: string, exited: Promise<number | null>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exitCode: number | null | undefined;
  void exited.then((code) => (exitCode = code));
  while (Date.now() < deadline) {
    if (exitCode !== undefined) throw new Error(`it exited with code ${exitCode}`);
    const ok = await fetch(`${url}/login`, { redirect: 'manual', signal: AbortSignal.timeout(2000) }).then(
      (r) => r.status < 500,
      () => false,
    );
    if (ok) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`no answer on ${url} within ${timeoutMs} ms`);
}

/** SIGTERM (adapter-node finishes open requests), SIGKILL if it is still there after 5 s. */
async function stopChild(child: ChildProcess, exited: Promise<number | null>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}
