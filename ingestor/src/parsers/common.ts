import { z } from 'zod';
import type { ParseContext, ParseResult, Parser } from './types.ts';

/** The failing half of ParseResult, for helpers that only ever reject. */
export type ParseFailure = Extract<ParseResult, { ok: false }>;

const IDENT_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const IDENT_RULE = '1–64 characters of A-Z a-z 0-9 _ . -';

/** A gateway, datalogger or sensor id (PAYLOADS.md; the database checks the same regex). */
export const identSchema = z.string().regex(IDENT_RE, { error: `must be ${IDENT_RULE}` });

export const isIdent = (value: string): boolean => IDENT_RE.test(value);

/**
 * Free text a device reports (model, firmware, unit...). Bounded so one message cannot bloat a
 * row, and without NUL: Postgres text rejects it, which would fail the whole write batch.
 */
export const labelSchema = z
  .string()
  .max(200, { error: 'must be at most 200 characters' })
  .refine((s) => !s.includes('\u0000'), { error: 'must not contain NUL characters' });

/** The most readings (or sensors) one message may carry; more is `too_large`, not `schema`. */
export const MAX_ITEMS_PER_MESSAGE = 1_000;

/** Epoch numbers above this are milliseconds (10^11 s is the year 5138; 10^11 ms is 1973). */
const EPOCH_MS_THRESHOLD = 1e11;
const MIN_TS_MS = Date.UTC(2000, 0, 1);
/** The largest time a Date can hold; beyond it `new Date(ms)` is Invalid Date. */
const MAX_DATE_MS = 8.64e15;
const MAX_FUTURE_MS = 24 * 3_600_000;

/**
 * zod's ISO datetime check, which also rejects impossible dates (Feb 30) that Date.parse would
 * roll over — as its pattern, which is all that check tests, so it runs without a zod parse.
 */
const ISO_WITH_OFFSET = z.iso.datetime({ offset: true }).def.pattern!;

/**
 * The timestamp rule on a string or number: the Date, or why not. One function for zod's
 * transform and for the parsers' fast paths, so both accept exactly the same.
 */
function timestampOf(raw: string | number): Date | string {
  let ms: number;
  if (typeof raw === 'number') ms = raw > EPOCH_MS_THRESHOLD ? raw : raw * 1000;
  else if (ISO_WITH_OFFSET.test(raw)) ms = Date.parse(raw);
  else return 'expected ISO 8601 with an offset (Z or ±HH:MM), e.g. 2026-11-26T10:15:00Z';
  if (!(ms >= MIN_TS_MS)) return 'is before 2000-01-01';
  if (ms > MAX_DATE_MS) return 'is too far in the future';
  return new Date(ms);
}

/**
 * A payload timestamp: ISO 8601 with an offset (`Z` or `±HH:MM`), or Unix epoch seconds or
 * milliseconds. Checks the format and the static lower bound (2000-01-01). The upper bound
 * depends on the receive time, so it is `futureTimestampFailure`'s job after parsing: payload
 * schemas are built once (zod compiles an object schema on first use, rebuilding one per message
 * would cost far more than the check itself), and zod has no per-parse context to carry
 * `receivedAt` into a refinement.
 */
export const timestampSchema = z
  .union([z.string(), z.number()], {
    error: (issue) =>
      issue.input === undefined ? 'required' : 'expected an ISO 8601 string or epoch seconds/milliseconds',
  })
  .transform((raw, ctx) => {
    const ts = timestampOf(raw);
    if (ts instanceof Date) return ts;
    ctx.issues.push({ code: 'custom', message: ts, input: raw });
    return z.NEVER;
  });

/**
 * `timestampSchema`'s output for an input it accepts, or undefined for anything else (zod then
 * says why). z.number() takes finite numbers only.
 */
export function fastTimestamp(raw: unknown): Date | undefined {
  if (typeof raw !== 'string' && !(typeof raw === 'number' && Number.isFinite(raw))) return undefined;
  const ts = timestampOf(raw);
  return ts instanceof Date ? ts : undefined;
}

/** The receive-time half of the timestamp rule: more than 24 h ahead is a device clock gone wrong. */
export function futureTimestampFailure(ts: Date, receivedAt: Date, path: string): ParseFailure | undefined {
  if (ts.getTime() - receivedAt.getTime() <= MAX_FUTURE_MS) return undefined;
  return schemaFailure(`${path}: is more than 24 h after the receive time`, [path]);
}

export function schemaFailure(message: string, issuePaths: string[]): ParseFailure {
  return { ok: false, kind: 'schema', message, issuePaths };
}

/** How a path is written in logs: zod's segments joined with '.'; the payload itself is '(root)'. */
export function formatPath(path: readonly PropertyKey[]): string {
  // A record key is payload text; bound it so a hostile key cannot bloat a log row.
  return path.length === 0 ? '(root)' : path.map(String).join('.').slice(0, 200);
}

/** Issue paths kept per failure: enough to act on, and a 1,000-issue payload stays one small row. */
const MAX_ISSUE_PATHS = 10;

export interface Issue {
  path: string;
  message: string;
}

/**
 * Issues as a ParseResult. The message names the first issue and how many more there are; it
 * never carries payload values, so identical errors share one aggregated log row.
 */
export function issuesFailure(issues: readonly Issue[]): ParseFailure {
  const paths = new Set<string>();
  for (const issue of issues) {
    if (paths.size >= MAX_ISSUE_PATHS) break;
    paths.add(issue.path);
  }
  const [first] = issues;
  const more = issues.length > 1 ? ` (+${issues.length - 1} more)` : '';
  return schemaFailure(first ? `${first.path}: ${first.message}${more}` : 'invalid payload', [...paths]);
}

/** A zod error as a ParseResult (zod's messages name types, not inputs). `prefix` locates a sub-value. */
export function zodFailure(error: z.ZodError, prefix: readonly PropertyKey[] = []): ParseFailure {
  return issuesFailure(
    error.issues.map((issue) => ({ path: formatPath([...prefix, ...issue.path]), message: issue.message })),
  );
}

/** Built-in parsers take no options; an unknown key is more likely a typo than a wish. */
export const emptyConfigSchema = z.strictObject({});

export type DeviceParam = 'gateway' | 'datalogger';

export interface SchemaParserSpec<S extends z.ZodType, K extends DeviceParam> {
  key: string;
  description: string;
  schema: S;
  /** The device wildcards the topic must carry; checked (with the site) before the payload is looked at. */
  devices: readonly K[];
  /** Cheap checks on the raw JSON before zod walks it (e.g. the length of a huge array). */
  precheck?: (json: unknown) => ParseFailure | undefined;
  /**
   * The schema's output, computed without zod, for input of the shape devices nearly always send;
   * undefined for anything else, which zod then parses (and explains, when it fails). It must never
   * accept what the schema rejects nor return another output (tests/integration/parsers.test.ts
   * compares it with zod on generated input): the guarantees are zod's, this only skips its walk.
   */
  fastParse?: (json: unknown) => z.output<S> | undefined;
  /** Turns the validated payload into rows; may still reject (e.g. a ts too far ahead). */
  normalize: (data: z.output<S>, ctx: ParseContext, devices: Record<K, string>) => ParseResult;
}

/**
 * A Parser from a zod schema and a normalize function: the shape every built-in parser has.
 * Order: topic (a message on a bad topic is not parsed at all), cheap prechecks, zod (or its fast
 * path), normalize.
 */
export function fromSchema<S extends z.ZodType, K extends DeviceParam>(spec: SchemaParserSpec<S, K>): Parser {
  const { schema, devices, precheck, fastParse, normalize } = spec;
  return {
    key: spec.key,
    description: spec.description,
    configSchema: emptyConfigSchema,
    parse: guarded(spec.key, (json, ctx) => {
      const topic = topicDevices(ctx, devices);
      if (!topic.ok) return topic;
      const early = precheck?.(json);
      if (early) return early;
      const fast = fastParse?.(json);
      if (fast !== undefined) return normalize(fast, ctx, topic.idents);
      const parsed = schema.safeParse(json);
      if (!parsed.success) return zodFailure(parsed.error);
      return normalize(parsed.data, ctx, topic.idents);
    }),
  };
}

/**
 * `parse` must not throw (the pipeline relies on it); a bug that does anyway becomes a
 * `processing` failure of that one message instead of breaking the connection's stream.
 */
export function guarded(key: string, parse: Parser['parse']): Parser['parse'] {
  return (json, ctx) => {
    try {
      return parse(json, ctx);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      return {
        ok: false,
        kind: 'processing',
        message: `parser ${key} failed: ${reason}`.slice(0, 300),
        issuePaths: [],
      };
    }
  };
}

/** More than MAX_ITEMS_PER_MESSAGE elements (array) or keys (object)? Counting stops at the limit. */
export function exceedsItemLimit(value: unknown): boolean {
  if (Array.isArray(value)) return value.length > MAX_ITEMS_PER_MESSAGE;
  if (typeof value !== 'object' || value === null) return false;
  let count = 0;
  // for...in with an early exit: no million-entry key array just to learn it is too big.
  for (const _key in value) if (++count > MAX_ITEMS_PER_MESSAGE) return true;
  return false;
}

/** `too_large` when `json[field]` holds more than MAX_ITEMS_PER_MESSAGE entries. */
export function tooManyItems(json: unknown, field: string): ParseFailure | undefined {
  if (typeof json !== 'object' || json === null || !Object.hasOwn(json, field)) return undefined;
  if (!exceedsItemLimit((json as Record<string, unknown>)[field])) return undefined;
  return tooLargeFailure(field);
}

export function tooLargeFailure(path: string): ParseFailure {
  return {
    ok: false,
    kind: 'too_large',
    message: `${path}: more than ${MAX_ITEMS_PER_MESSAGE} entries in one message`,
    issuePaths: [],
  };
}

function invalidTopic(message: string): ParseFailure {
  return { ok: false, kind: 'invalid_topic', message, issuePaths: [] };
}

/** A `+site` wildcard must capture the connection's own site: a device must not write into another site. */
export function siteFailure(ctx: ParseContext): ParseFailure | undefined {
  const site = ctx.params['site'];
  if (site === undefined || site === ctx.siteSlug) return undefined;
  return invalidTopic("the topic's site segment differs from the connection's site");
}

/** One named wildcard's value as a device id, or why it is not one. Messages carry no topic text. */
export function topicIdent(ctx: ParseContext, name: string): string | ParseFailure {
  const value = ctx.params[name];
  if (value === undefined) return invalidTopic(`the topic pattern has no +${name} wildcard`);
  if (typeof value !== 'string') return invalidTopic(`the +${name} wildcard must capture one topic segment`);
  if (!isIdent(value)) return invalidTopic(`the ${name} segment of the topic is not a valid device id (${IDENT_RULE})`);
  return value;
}

/** The site check plus the named device idents of a bfg topic (`+gateway`, `+datalogger`). */
export function topicDevices<K extends DeviceParam>(
  ctx: ParseContext,
  names: readonly K[],
): { ok: true; idents: Record<K, string> } | ParseFailure {
  const site = siteFailure(ctx);
  if (site) return site;
  const idents = {} as Record<K, string>;
  for (const name of names) {
    const ident = topicIdent(ctx, name);
    if (typeof ident !== 'string') return ident;
    idents[name] = ident;
  }
  return { ok: true, idents };
}
