import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { getFreePort } from '@bfg/local';
import { makeTempDir } from './temp-dir.ts';

const run = promisify(execFile);
const MOSQUITTO = '/usr/sbin/mosquitto';
/** Debian's mosquitto package ships the dynamic-security plugin here. */
const DYNSEC_PLUGIN = `/usr/lib/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu/mosquitto_dynamic_security.so`;
const SETPRIV = '/usr/bin/setpriv';
const READY_TIMEOUT_MS = 10_000;
const STDERR_LINES = 50;

export interface MosquittoOptions {
  /** username → password; when given, anonymous clients are refused. */
  users?: Record<string, string>;
  /** Also open a TLS listener (self-signed CA + server cert for 127.0.0.1) on a second port. */
  tls?: boolean;
  /** Keep sessions, subscriptions and queued messages on disk across restart(). */
  persistence?: boolean;
  /**
   * Anonymous clients may not subscribe to filters matching these (MQTT 3.1.1 SUBACK 0x80, MQTT 5
   * 0x87). Mosquitto's acl_file never refuses a SUBSCRIBE (it only filters deliveries); its
   * dynamic-security plugin, installed with it, does.
   */
  refuseSubscriptions?: string[];
  /** QoS 1 messages queued per client at most (default 100,000); a benchmark's backlog needs more. */
  maxQueuedMessages?: number;
}

export interface RunningMosquitto {
  readonly port: number;
  readonly url: string;
  readonly tlsPort?: number;
  readonly tlsUrl?: string;
  /** PEM of the CA that signed the TLS listener's certificate (only with `tls`). */
  readonly caCert?: string;
  readonly users: Record<string, string>;
  /** Stops the broker and removes its directory. */
  stop(): Promise<void>;
  /**
   * Stops the broker and starts it again on the same ports with the same persistence directory;
   * `whileDown` runs in between.
   */
  restart(whileDown?: () => Promise<void>): Promise<void>;
}

// A test that forgets stop() must not leave a broker behind. Every child is killed on 'exit'
// (process.exit, or the loop running dry); vitest ends its fork workers with SIGTERM, which skips
// 'exit', so children are also started under `setpriv --pdeathsig`: the kernel kills them when
// the process that spawned them dies, however it dies.
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/** Starts a real Mosquitto on free loopback ports, configured for tests (see `config`). */
export async function startMosquitto(options: MosquittoOptions = {}): Promise<RunningMosquitto> {
  const users = options.users ?? {};
  const dir = await makeTempDir('mosquitto');
  try {
    const port = await getFreePort();
    const tlsPort = options.tls ? await getFreePort() : undefined;
    const lines = [`listener ${port} 127.0.0.1`];
    if (tlsPort !== undefined) {
      await makeCertificates(dir.path);
      lines.push(
        `listener ${tlsPort} 127.0.0.1`,
        `cafile ${path.join(dir.path, 'ca.crt')}`,
        `certfile ${path.join(dir.path, 'server.crt')}`,
        `keyfile ${path.join(dir.path, 'server.key')}`,
      );
    }
    const passwordFile = Object.keys(users).length ? path.join(dir.path, 'passwords') : undefined;
    if (passwordFile) await writePasswordFile(passwordFile, users);
    if (options.refuseSubscriptions && !existsSync(DYNSEC_PLUGIN))
      throw new Error(`refuseSubscriptions needs ${DYNSEC_PLUGIN} (package mosquitto)`);
    const dynsecFile = options.refuseSubscriptions ? path.join(dir.path, 'dynamic-security.json') : undefined;
    if (dynsecFile) await fs.writeFile(dynsecFile, JSON.stringify(dynamicSecurity(options.refuseSubscriptions!)));
    const configFile = path.join(dir.path, 'mosquitto.conf');
    await fs.writeFile(
      configFile,
      config(lines, dir.path, {
        passwordFile,
        dynsecFile,
        persistence: options.persistence ?? false,
        maxQueuedMessages: options.maxQueuedMessages ?? 100_000,
      }),
    );

    const broker = new BrokerProcess(configFile, [port, ...(tlsPort === undefined ? [] : [tlsPort])]);
    await broker.start();
    const caCert = tlsPort === undefined ? undefined : await fs.readFile(path.join(dir.path, 'ca.crt'), 'utf8');
    let stopped = false;
    return {
      port,
      url: `mqtt://127.0.0.1:${port}`,
      ...(tlsPort === undefined ? {} : { tlsPort, tlsUrl: `mqtts://127.0.0.1:${tlsPort}`, caCert }),
      users,
      async stop() {
        if (stopped) return;
        stopped = true;
        await broker.stop();
        await dir.remove();
      },
      async restart(whileDown) {
        if (stopped) throw new Error('restart() after stop(): this Mosquitto is gone');
        await broker.stop();
        try {
          await whileDown?.();
        } finally {
          await broker.start();
        }
      },
    };
  } catch (err) {
    await dir.remove();
    throw err;
  }
}

/**
 * The generated mosquitto.conf; the `#` lines say why a setting differs from the defaults, for
 * whoever reads the file in the temp dir (mosquitto only takes comments on lines of their own).
 */
function config(
  listeners: string[],
  dir: string,
  opts: {
    passwordFile: string | undefined;
    dynsecFile: string | undefined;
    persistence: boolean;
    maxQueuedMessages: number;
  },
): string {
  const lines = [
    '# Generated by tests/support/mosquitto.ts',
    '# Loopback only: tests never expose a broker beyond this machine.',
    ...listeners,
    ...(opts.passwordFile
      ? ['allow_anonymous false', `password_file ${opts.passwordFile}`]
      : ['# Mosquitto 2 refuses anonymous clients by default once a listener is configured.', 'allow_anonymous true']),
    ...(opts.dynsecFile
      ? [
          '# Refuses some subscriptions of anonymous clients (tests of SUBACK refusals).',
          `plugin ${DYNSEC_PLUGIN}`,
          `plugin_opt_config_file ${opts.dynsecFile}`,
        ]
      : []),
    '# The default of 1000 silently drops QoS 1 messages for a subscriber that falls behind (or is',
    '# away with a persistent session); tests count every message, so none may be dropped.',
    `max_queued_messages ${opts.maxQueuedMessages}`,
    '# Room for a fast QoS 1 publisher/consumer pair without stalling on acknowledgements.',
    'max_inflight_messages 1000',
    '# Persistent sessions of a client that is away (a stopped ingestor) must outlive any test.',
    'persistent_client_expiration 1d',
    ...(opts.persistence
      ? [
          '# Sessions and queued messages survive restart() (saved on SIGTERM).',
          'persistence true',
          `persistence_location ${dir}/`,
        ]
      : ['persistence false']),
    '# The harness keeps the last stderr lines and reports them when start-up fails. One type per',
    '# line: mosquitto reads only the first word of a log_type option.',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    'log_type notice',
  ];
  // As root, mosquitto drops privileges to the `mosquitto` user right after opening the listeners
  // and only then reads the password file and the TLS key and writes persistence: in our
  // root-owned temp dir that fails. Staying root keeps the key private (no chmod 644) and keeps
  // the parent-death signal, which the kernel clears on a change of credentials.
  if (process.getuid?.() === 0) {
    lines.push('# Running as root: stay root, so the files of this root-owned temp dir stay usable.', 'user root');
  }
  return `${lines.join('\n')}\n`;
}

/**
 * A dynamic-security config: anonymous clients may do anything except subscribe to `refused`.
 * The plugin writes the file back, so it lives in the broker's temp dir.
 */
function dynamicSecurity(refused: string[]): unknown {
  return {
    defaultACLAccess: { publishClientSend: true, publishClientReceive: true, subscribe: true, unsubscribe: true },
    clients: [],
    groups: [{ groupname: 'anonymous', roles: [{ rolename: 'refusals' }] }],
    roles: [
      {
        rolename: 'refusals',
        acls: refused.map((topic) => ({ acltype: 'subscribePattern', topic, priority: 0, allow: false })),
      },
    ],
    anonymousGroup: 'anonymous',
  };
}

async function writePasswordFile(file: string, users: Record<string, string>): Promise<void> {
  let create = true;
  for (const [username, password] of Object.entries(users)) {
    // -c creates (truncates) the file, so only for the first user.
    await run('mosquitto_passwd', [...(create ? ['-c'] : []), '-b', file, username, password]);
    create = false;
  }
}

/** A throwaway CA and a server certificate it signs, valid for 127.0.0.1 (CN and IP SAN). */
async function makeCertificates(dir: string): Promise<void> {
  const at = (name: string) => path.join(dir, name);
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', [
    'req',
    '-x509',
    ...key,
    '-keyout',
    at('ca.key'),
    '-out',
    at('ca.crt'),
    '-days',
    '2',
    '-subj',
    '/CN=BFG test CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  await run('openssl', [
    'req',
    '-new',
    ...key,
    '-keyout',
    at('server.key'),
    '-out',
    at('server.csr'),
    '-subj',
    '/CN=127.0.0.1',
  ]);
  await fs.writeFile(
    at('server.ext'),
    'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n',
  );
  await run('openssl', [
    'x509',
    '-req',
    '-in',
    at('server.csr'),
    '-CA',
    at('ca.crt'),
    '-CAkey',
    at('ca.key'),
    '-CAcreateserial',
    '-out',
    at('server.crt'),
    '-days',
    '2',
    '-extfile',
    at('server.ext'),
  ]);
}

/** One mosquitto child at a time for a config; start() again after stop() reuses config and ports. */
class BrokerProcess {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private readonly stderr: string[] = [];
  private readonly configFile: string;
  private readonly ports: number[];

  constructor(configFile: string, ports: number[]) {
    this.configFile = configFile;
    this.ports = ports;
  }

  async start(): Promise<void> {
    const args = ['-c', this.configFile];
    const [command, argv] = existsSync(SETPRIV)
      ? [SETPRIV, ['--pdeathsig', 'SIGKILL', MOSQUITTO, ...args]]
      : [MOSQUITTO, args];
    const child = spawn(command, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    live.add(child);
    let exitCode: string | undefined;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        live.delete(child);
        exitCode = signal ?? String(code);
        resolve();
      });
    });
    child.on('error', (err) => this.remember(`spawn failed: ${err.message}`));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => this.remember(chunk));
    // Neither the child nor its pipe keeps the test process alive: a forgotten broker lets the
    // process end, and the 'exit' hook then kills it.
    child.unref();
    if (child.stderr instanceof net.Socket) child.stderr.unref();

    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (const port of this.ports) {
      // A bounded poll of connection attempts: Mosquitto has no readiness signal of its own.
      while (!(await accepts(port))) {
        if (exitCode !== undefined || Date.now() > deadline) {
          const why =
            exitCode === undefined
              ? `did not accept connections on port ${port} within ${READY_TIMEOUT_MS} ms`
              : `exited (${exitCode})`;
          await this.stop();
          throw new Error(`mosquitto ${why}; its stderr:\n${this.stderr.join('\n')}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
  }

  /** SIGTERM (Mosquitto saves persistence and closes its listeners), then waits for the exit. */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (child && child.exitCode === null && child.signalCode === null) {
      // Referenced again: a caller awaiting stop() must keep the process alive until the exit.
      child.ref();
      child.kill('SIGTERM');
    }
    await this.exited;
  }

  private remember(text: string): void {
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      this.stderr.push(line);
      if (this.stderr.length > STDERR_LINES) this.stderr.shift();
    }
  }
}

/** Whether something accepts a TCP connection on 127.0.0.1:port right now. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
