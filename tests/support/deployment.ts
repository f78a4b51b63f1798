import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { parse as parseYaml } from 'yaml';
import { repoRoot } from '@bfg/local';

/**
 * Readers for the deployment files (docker-compose.yml, .env.example, the Dockerfiles,
 * .dockerignore), small and strict: what they do not understand, they reject, so a test built
 * on them cannot pass by skipping what it cannot read. No Docker engine is needed.
 */

export const repoPath = (...parts: string[]) => path.join(repoRoot, ...parts);
const read = (file: string) => fs.readFileSync(repoPath(file), 'utf8');

// ---------------------------------------------------------------------------------------------
// docker-compose.yml

export interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile?: string; target?: string };
  command?: string[] | string;
  entrypoint?: string[] | string;
  environment?: Record<string, string | number | boolean | null>;
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] | string; disable?: boolean };
  ports?: string[];
  profiles?: string[];
  restart?: string;
  networks?: Record<string, { aliases?: string[] } | null>;
  volumes?: string[];
  [key: string]: unknown;
}

export interface ComposeDocument {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
  [key: string]: unknown;
}

/** docker-compose.yml as YAML says it, before interpolation. */
export function readCompose(text = read('docker-compose.yml')): ComposeDocument {
  return parseYaml(text) as ComposeDocument;
}

export interface VariableUse {
  name: string;
  /** `${X:-d}` / `${X-d}`: the text used when X is unset (`:-`: or empty). */
  fallback?: string;
  /** `${X:?message}` / `${X?message}`: Compose refuses to start without X. */
  required: boolean;
}

/**
 * Compose interpolation of one string, as the Compose Specification defines it: `$$` is a `$`,
 * `$X` and `${X}` the value, `${X:-d}` / `${X-d}` a fallback (itself interpolated, so
 * `${A:-${B}}` nests), `${X:?e}` / `${X?e}` required, `${X:+r}` / `${X+r}` a replacement.
 * `uses` collects every variable met, fallbacks included.
 */
export function interpolate(value: string, env: Record<string, string>, uses: VariableUse[] = []): string {
  let out = '';
  for (let i = 0; i < value.length;) {
    const char = value[i]!;
    if (char !== '$') {
      out += char;
      i += 1;
      continue;
    }
    const next = value[i + 1];
    if (next === '$') {
      out += '$';
      i += 2;
    } else if (next === '{') {
      let depth = 1;
      let end = i + 2;
      for (; end < value.length && depth > 0; end += 1) {
        if (value[end] === '{') depth += 1;
        else if (value[end] === '}') depth -= 1;
      }
      if (depth !== 0) throw new Error(`unclosed \${ in ${JSON.stringify(value)}`);
      out += substitute(value.slice(i + 2, end - 1), env, uses);
      i = end;
    } else {
      const match = /^[A-Za-z_][A-Za-z0-9_]*/.exec(value.slice(i + 1));
      if (!match) throw new Error(`a lone $ in ${JSON.stringify(value)} (write $$ for a literal $)`);
      uses.push({ name: match[0], required: false });
      out += env[match[0]] ?? '';
      i += 1 + match[0].length;
    }
  }
  return out;
}

function substitute(inner: string, env: Record<string, string>, uses: VariableUse[]): string {
  const match = /^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([\s\S]*))?$/.exec(inner);
  if (!match) throw new Error(`not a variable reference: \${${inner}}`);
  const [, name, operator, rest = ''] = match as unknown as [string, string, string | undefined, string | undefined];
  const value = env[name];
  const unset = operator?.startsWith(':') ? !value : value === undefined;
  if (!operator) {
    uses.push({ name, required: false });
    return value ?? '';
  }
  if (operator.endsWith('-')) {
    uses.push({ name, fallback: rest, required: false });
    const fallback = interpolate(rest, env, uses);
    return unset ? fallback : value!;
  }
  if (operator.endsWith('?')) {
    uses.push({ name, required: true });
    if (unset) throw new Error(`required variable ${name} is missing: ${rest}`);
    return value!;
  }
  uses.push({ name, required: false });
  const replacement = interpolate(rest, env, uses);
  return unset ? '' : replacement;
}

/** Applies `interpolate` to every string value of the document (keys are not interpolated). */
export function interpolateDocument<T>(doc: T, env: Record<string, string>, uses: VariableUse[] = []): T {
  const walk = (node: unknown): unknown => {
    if (typeof node === 'string') return interpolate(node, env, uses);
    if (Array.isArray(node)) return node.map(walk);
    if (node && typeof node === 'object') {
      return Object.fromEntries(Object.entries(node).map(([key, value]) => [key, walk(value)]));
    }
    return node;
  };
  return walk(doc) as T;
}

/** A service's `command`/`healthcheck.test` as an argument list (exec form only). */
export function execForm(value: string[] | string | undefined, what: string): string[] {
  if (!Array.isArray(value)) throw new Error(`${what} must be in exec form (a list), got ${JSON.stringify(value)}`);
  return value;
}

// ---------------------------------------------------------------------------------------------
// .env.example

export interface EnvExampleEntry {
  value: string;
  /** A `NAME=value` line; false for a commented `# NAME=value` (optional, showing its default). */
  set: boolean;
  line: number;
}

/** `NAME=value` and `# NAME=value` lines; any other line must be a comment or blank. */
export function readEnvExample(text = read('.env.example')): Map<string, EnvExampleEntry> {
  const entries = new Map<string, EnvExampleEntry>();
  text.split('\n').forEach((raw, index) => {
    const line = raw.trim();
    const match = /^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    if (match) {
      const name = match[2]!;
      if (entries.has(name)) throw new Error(`.env.example:${index + 1}: ${name} given twice`);
      entries.set(name, { value: match[3]!, set: !match[1], line: index + 1 });
    } else if (line !== '' && !line.startsWith('#')) {
      throw new Error(`.env.example:${index + 1}: not NAME=value, # NAME=value or a comment: ${raw}`);
    }
  });
  return entries;
}

/**
 * Values for what .env.example sets: its own, or a stand-in where it leaves a secret empty (the
 * commented, optional ones stay unset, so Compose's fallbacks apply).
 */
export function exampleValues(entries = readEnvExample()): Record<string, string> {
  return Object.fromEntries(
    [...entries].filter(([, e]) => e.set).map(([name, e]) => [name, e.value || `${name.toLowerCase()}0123456789`]),
  );
}

// ---------------------------------------------------------------------------------------------
// The env schemas of the ingestor and the dashboard

/**
 * The keys of the object literal given to `defineEnvVars(...)` in web/src/env.ts, read with the
 * TypeScript compiler (the module imports `$app/env`, which only SvelteKit can load).
 */
export function dashboardEnvSchemaKeys(file = 'web/src/env.ts'): string[] {
  const source = ts.createSourceFile(file, read(file), ts.ScriptTarget.Latest, true);
  const keys: string[] = [];
  let calls = 0;
  const visit = (node: ts.Node) => {
    if (ts.isCallExpression(node) && ts.isIdentifier(node.expression) && node.expression.text === 'defineEnvVars') {
      calls += 1;
      const [arg] = node.arguments;
      if (!arg || !ts.isObjectLiteralExpression(arg)) throw new Error(`${file}: defineEnvVars takes an object literal`);
      for (const property of arg.properties) {
        if (
          !ts.isPropertyAssignment(property) ||
          !(ts.isIdentifier(property.name) || ts.isStringLiteral(property.name))
        )
          throw new Error(`${file}: every variable must be a plain property (${property.getText()})`);
        keys.push(property.name.text);
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  if (calls !== 1) throw new Error(`${file}: expected one defineEnvVars call, found ${calls}`);
  return keys;
}

/** `process.env.NAME` / `process.env['NAME']` read by a plain script (web/server.js). */
export function processEnvReads(file: string): string[] {
  const names = new Set<string>();
  for (const match of read(file).matchAll(/process\.env(?:\.([A-Za-z_][A-Za-z0-9_]*)|\[\s*['"]([^'"]+)['"]\s*\])/g)) {
    names.add(match[1] ?? match[2]!);
  }
  return [...names];
}

// ---------------------------------------------------------------------------------------------
// Dockerfiles

export interface Instruction {
  keyword: string;
  args: string;
  line: number;
}

export interface Stage {
  name: string | undefined;
  /** The image or earlier stage it starts from, ARGs substituted. */
  from: string;
  instructions: Instruction[];
}

export interface Dockerfile {
  file: string;
  stages: Stage[];
}

const KEYWORDS = new Set([
  'ADD',
  'ARG',
  'CMD',
  'COPY',
  'ENTRYPOINT',
  'ENV',
  'EXPOSE',
  'FROM',
  'HEALTHCHECK',
  'LABEL',
  'RUN',
  'SHELL',
  'STOPSIGNAL',
  'USER',
  'VOLUME',
  'WORKDIR',
]);

export function readDockerfile(file: string): Dockerfile {
  const lines = read(file).split('\n');
  const instructions: Instruction[] = [];
  for (let i = 0; i < lines.length; i += 1) {
    const start = i;
    if (/^\s*(#|$)/.test(lines[i]!)) continue;
    let text = lines[i]!;
    while (text.endsWith('\\')) {
      i += 1;
      if (i >= lines.length) throw new Error(`${file}:${start + 1}: continuation at the end of the file`);
      // Comment lines inside a continued instruction are dropped, as BuildKit does.
      if (/^\s*#/.test(lines[i]!)) {
        text = `${text.slice(0, -1)} \\`;
        continue;
      }
      text = `${text.slice(0, -1)} ${lines[i]!.trim()}`;
    }
    const match = /^\s*([A-Za-z]+)\s+([\s\S]*)$/.exec(text);
    if (!match || !KEYWORDS.has(match[1]!.toUpperCase())) throw new Error(`${file}:${start + 1}: cannot read ${text}`);
    instructions.push({ keyword: match[1]!.toUpperCase(), args: match[2]!.trim(), line: start + 1 });
  }
  const globalArgs: Record<string, string> = {};
  const stages: Stage[] = [];
  for (const instruction of instructions) {
    if (instruction.keyword === 'FROM') {
      const match = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(instruction.args);
      if (!match) throw new Error(`${file}:${instruction.line}: cannot read FROM ${instruction.args}`);
      const from = match[1]!.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a?: string, b?: string) => {
        const name = (a ?? b)!;
        const value = globalArgs[name];
        if (value === undefined) throw new Error(`${file}:${instruction.line}: ARG ${name} has no default`);
        return value;
      });
      stages.push({ name: match[2], from, instructions: [] });
    } else if (stages.length === 0) {
      if (instruction.keyword !== 'ARG') throw new Error(`${file}:${instruction.line}: only ARG may come before FROM`);
      const [name, value] = instruction.args.split('=', 2);
      if (value !== undefined) globalArgs[name!] = value;
    } else {
      stages.at(-1)!.instructions.push(instruction);
    }
  }
  return { file, stages };
}

export function stage(dockerfile: Dockerfile, name?: string): Stage {
  const found = name === undefined ? dockerfile.stages.at(-1) : dockerfile.stages.find((s) => s.name === name);
  if (!found) throw new Error(`${dockerfile.file}: no stage ${name ?? '(last)'}`);
  return found;
}

/** The last instruction of a kind in a stage, undefined when there is none. */
export function last(s: Stage, keyword: string): Instruction | undefined {
  return s.instructions.filter((i) => i.keyword === keyword).at(-1);
}

/** `CMD [...]` in exec form; a shell form is refused (the shell would be PID 1 and eat SIGTERM). */
export function execArgs(instruction: Instruction, file: string): string[] {
  const json = instruction.keyword === 'HEALTHCHECK' ? healthcheckCommand(instruction, file) : instruction.args;
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    throw new Error(`${file}:${instruction.line}: ${instruction.keyword} is not in exec form: ${instruction.args}`);
  }
  if (!Array.isArray(parsed) || !parsed.every((arg) => typeof arg === 'string'))
    throw new Error(`${file}:${instruction.line}: ${instruction.keyword} must be a list of strings`);
  return parsed;
}

function healthcheckCommand(instruction: Instruction, file: string): string {
  const match = /^((?:--[a-z-]+=\S+\s+)*)CMD\s+([\s\S]+)$/.exec(instruction.args);
  if (!match) throw new Error(`${file}:${instruction.line}: cannot read HEALTHCHECK ${instruction.args}`);
  return match[2]!;
}

/** ENV of a stage, earlier stages it starts from included (`NAME=value` pairs, `NAME="a b"` for spaces). */
export function stageEnv(dockerfile: Dockerfile, s: Stage): Record<string, string> {
  const parent = dockerfile.stages.find((other) => other.name === s.from);
  const env = parent ? stageEnv(dockerfile, parent) : {};
  for (const instruction of s.instructions.filter((i) => i.keyword === 'ENV')) {
    // NAME=value pairs; a value with spaces in double quotes (no escapes inside).
    const pair = /\s*([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|[^\s"]*)/y;
    let end = 0;
    for (let match = pair.exec(instruction.args); match; match = pair.exec(instruction.args)) {
      env[match[1]!] = match[2]!.replace(/^"(.*)"$/, '$1');
      end = pair.lastIndex;
    }
    if (instruction.args.slice(end).trim() !== '')
      throw new Error(`${dockerfile.file}:${instruction.line}: ENV NAME=value only`);
  }
  return env;
}

export function workdir(dockerfile: Dockerfile, s: Stage): string {
  const own = last(s, 'WORKDIR');
  if (own) return own.args;
  const parent = dockerfile.stages.find((other) => other.name === s.from);
  return parent ? workdir(dockerfile, parent) : '/';
}

/**
 * Where a file of a stage's filesystem comes from: a path of the build context (through COPY, in
 * this stage or the stages it copies from or starts from), or undefined when no COPY provides it
 * (a RUN made it, or nothing did).
 */
export function contextSourceOf(dockerfile: Dockerfile, s: Stage, imagePath: string): string | undefined {
  const dir = workdir(dockerfile, s);
  for (const copy of s.instructions.filter((i) => i.keyword === 'COPY').reverse()) {
    const words = copy.args.split(/\s+/);
    const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length);
    const paths = words.filter((w) => !w.startsWith('--'));
    const destWord = paths.at(-1)!;
    const dest = path.posix.resolve(dir, destWord);
    const sources = paths.slice(0, -1);
    const intoDirectory = destWord.endsWith('/') || sources.length > 1;
    for (const source of sources) {
      // A directory's contents go into dest; a file goes to dest, or into it when dest is a directory.
      const isDirectory =
        from === undefined ? fs.statSync(repoPath(source), { throwIfNoEntry: false })?.isDirectory() : undefined;
      const fileTarget = intoDirectory ? path.posix.join(dest, path.posix.basename(source)) : dest;
      let found: string | undefined;
      if (isDirectory !== false && imagePath.startsWith(`${dest}/`))
        found = path.posix.join(source, imagePath.slice(dest.length));
      else if (isDirectory !== true && imagePath === fileTarget) found = source;
      if (found === undefined) continue;
      return from === undefined
        ? path.posix.normalize(found)
        : contextSourceOf(dockerfile, stage(dockerfile, from), found);
    }
  }
  const parent = dockerfile.stages.find((other) => other.name === s.from);
  return parent ? contextSourceOf(dockerfile, parent, imagePath) : undefined;
}

// ---------------------------------------------------------------------------------------------
// .dockerignore

/**
 * Docker's rules: patterns relative to the context root, `*` and `?` within a path segment, `**`
 * across segments, `!` re-includes; the last matching pattern decides, and a pattern that matches
 * a directory excludes what is under it.
 */
export function dockerignore(text = read('.dockerignore')): (file: string) => boolean {
  const rules = text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const exception = line.startsWith('!');
      const pattern = path.posix.normalize((exception ? line.slice(1) : line).replace(/^\/+/, ''));
      return { exception, regex: globToRegex(pattern) };
    });
  return (file: string) => {
    const parts = path.posix.normalize(file).split('/');
    let excluded = false;
    for (const rule of rules) {
      for (let n = 1; n <= parts.length; n += 1) {
        if (rule.regex.test(parts.slice(0, n).join('/'))) {
          excluded = !rule.exception;
          break;
        }
      }
    }
    return excluded;
  };
}

function globToRegex(pattern: string): RegExp {
  let out = '';
  for (let i = 0; i < pattern.length; i += 1) {
    const char = pattern[i]!;
    if (pattern.startsWith('**/', i)) {
      out += '(?:.*/)?';
      i += 2;
    } else if (pattern.startsWith('**', i)) {
      out += '.*';
      i += 1;
    } else if (char === '*') out += '[^/]*';
    else if (char === '?') out += '[^/]';
    else out += char.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${out}$`);
}
