import { z } from 'zod';
import {
  MAX_ITEMS_PER_MESSAGE,
  exceedsItemLimit,
  futureTimestampFailure,
  guarded,
  identSchema,
  isIdent,
  issuesFailure,
  labelSchema,
  siteFailure,
  timestampSchema,
  tooLargeFailure,
  topicIdent,
  zodFailure,
  type Issue,
  type ParseFailure,
} from './common.ts';
import type { ParseContext, Parser, ReadingRow, SensorRow } from './types.ts';

/**
 * A dotted path into the payload: `data.device.id`, array elements by index (`items.0.v`), `""`
 * for the payload itself. Keys containing a dot cannot be addressed; that is the price of a path
 * a person can type into a form.
 */
const pathSchema = z
  .string()
  .max(200)
  .regex(/^(?:[^.]+(?:\.[^.]+)*)?$/, { error: 'must be a dotted path like data.device.id' });
const param = z.strictObject({ param: z.string().min(1).max(64) });
const path = z.strictObject({ path: pathSchema });
const sensorEntry = z.strictObject({
  sensor: identSchema,
  path: pathSchema,
  unit: labelSchema.optional(),
  kind: labelSchema.optional(),
  name: labelSchema.optional(),
});

/**
 * `mqtt_topic.parser_config` of the `generic-json` parser: where a payload that follows no
 * built-in protocol keeps its device ids, timestamp and values.
 *
 * - `gateway`, `datalogger` (required): `{"param": "<wildcard name>"}` (a named wildcard of the
 *   topic pattern), `{"path": "<dotted path>"}` (a string or integer in the payload), or
 *   `{"value": "<fixed id>"}`. Ids follow the device id rule (1–64 of A-Z a-z 0-9 _ . -).
 * - `timestamp` (optional; absent = receive time): `{"param": ...}` or `{"path": ...}`; ISO 8601
 *   with offset or epoch seconds/milliseconds, as in the BFG protocol.
 * - `values` (required): `{"path": "<dotted path>"}` to an object of `{"<sensor id>": number|null}`,
 *   or a list `[{"sensor": "<id>", "path": "<dotted path>", "unit"?, "kind"?, "name"?}]`.
 *
 * @example Pattern `acme/+device/telemetry`, payload
 * `{"time": 1764152100, "data": {"temp": 21.4, "hum": 55}}`:
 * ```json
 * {
 *   "gateway": {"param": "device"},
 *   "datalogger": {"value": "main"},
 *   "timestamp": {"path": "time"},
 *   "values": [
 *     {"sensor": "t_air", "path": "data.temp", "unit": "°C", "kind": "temperature"},
 *     {"sensor": "rh", "path": "data.hum", "unit": "%"}
 *   ]
 * }
 * ```
 */
export const configSchema = z.strictObject({
  gateway: z.union([param, path, z.strictObject({ value: identSchema })]),
  datalogger: z.union([param, path, z.strictObject({ value: identSchema })]),
  timestamp: z.union([param, path]).optional(),
  values: z.union([
    path,
    z
      .array(sensorEntry)
      .min(1)
      .max(MAX_ITEMS_PER_MESSAGE)
      .refine((list) => new Set(list.map((e) => e.sensor)).size === list.length, {
        error: 'each sensor may be listed once',
      }),
  ]),
});
export type GenericJsonConfig = z.output<typeof configSchema>;

const MISSING = Symbol('missing');

/**
 * Reads a dotted path. Hand-written because a dotted path is a few lines, while a JSONPath
 * library is far more surface (filters, scripts, recursion) than this parser needs or should
 * expose. Own properties only: `__proto__` or `constructor` must not reach the prototype.
 */
function readPath(root: unknown, segments: readonly string[]): unknown {
  let node = root;
  for (const segment of segments) {
    if (Array.isArray(node)) {
      const index = /^\d+$/.test(segment) ? Number(segment) : -1;
      if (index < 0 || index >= node.length) return MISSING;
      node = node[index];
    } else if (typeof node === 'object' && node !== null && Object.hasOwn(node, segment)) {
      node = (node as Record<string, unknown>)[segment];
    } else {
      return MISSING;
    }
  }
  return node;
}

const segmentsOf = (p: string): string[] => (p === '' ? [] : p.split('.'));
const shown = (p: string): string => (p === '' ? '(root)' : p);

/** The config is validated once per config object (the matcher keeps it for all its messages). */
const compiled = new WeakMap<object, GenericJsonConfig>();

function configOf(raw: unknown): GenericJsonConfig | ParseFailure {
  const cached = typeof raw === 'object' && raw !== null ? compiled.get(raw) : undefined;
  if (cached) return cached;
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const detail = zodFailure(parsed.error).message;
    return {
      ok: false,
      kind: 'processing',
      message: `parser_config is not a valid generic-json config: ${detail}`,
      issuePaths: [],
    };
  }
  if (typeof raw === 'object' && raw !== null) compiled.set(raw, parsed.data);
  return parsed.data;
}

type IdentSource = GenericJsonConfig['gateway'];

/** A device id from the topic, the payload or the config. Payload integers are accepted as ids. */
function identOf(
  source: IdentSource,
  json: unknown,
  ctx: ParseContext,
  issues: Issue[],
): string | ParseFailure | undefined {
  if ('value' in source) return source.value;
  if ('param' in source) return topicIdent(ctx, source.param);
  const value = readPath(json, segmentsOf(source.path));
  if (value === MISSING) issues.push({ path: shown(source.path), message: 'required' });
  else if (typeof value === 'string' && isIdent(value)) return value;
  else if (Number.isSafeInteger(value) && (value as number) >= 0) return String(value);
  else issues.push({ path: shown(source.path), message: 'must be a device id (1–64 characters of A-Z a-z 0-9 _ . -)' });
  return undefined;
}

/** The message time; format problems go to `issues` (with the other payload issues), undefined then. */
function timestampOf(
  config: GenericJsonConfig,
  json: unknown,
  ctx: ParseContext,
  issues: Issue[],
): Date | ParseFailure | undefined {
  const source = config.timestamp;
  if (!source) return ctx.receivedAt;
  let raw: unknown;
  let where: string;
  if ('param' in source) {
    const value = ctx.params[source.param];
    if (typeof value !== 'string')
      return {
        ok: false,
        kind: 'invalid_topic',
        message: `the topic pattern has no +${source.param} wildcard for the timestamp`,
        issuePaths: [],
      };
    // Topic segments are always text; a run of digits there is the epoch number it spells.
    raw = /^\d+(\.\d+)?$/.test(value) ? Number(value) : value;
    where = `+${source.param}`;
  } else {
    raw = readPath(json, segmentsOf(source.path));
    where = shown(source.path);
    if (raw === MISSING) {
      issues.push({ path: where, message: 'required' });
      return undefined;
    }
  }
  const parsed = timestampSchema.safeParse(raw);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) issues.push({ path: where, message: issue.message });
    return undefined;
  }
  return futureTimestampFailure(parsed.data, ctx.receivedAt, where) ?? parsed.data;
}

function isValue(value: unknown): value is number | null {
  return value === null || (typeof value === 'number' && Number.isFinite(value));
}
const VALUE_RULE = 'must be a finite number or null (strings are not coerced)';

export const genericJsonParser: Parser = {
  key: 'generic-json',
  description:
    'Declarative JSON: device ids, timestamp and values located by parser_config (topic wildcards or payload paths)',
  configSchema,
  parse: guarded('generic-json', (json, ctx) => {
    const config = configOf(ctx.parserConfig);
    if ('ok' in config) return config;
    const site = siteFailure(ctx);
    if (site) return site;
    const issues: Issue[] = [];
    const gateway = identOf(config.gateway, json, ctx, issues);
    if (typeof gateway === 'object') return gateway;
    const datalogger = identOf(config.datalogger, json, ctx, issues);
    if (typeof datalogger === 'object') return datalogger;
    const ts = timestampOf(config, json, ctx, issues);
    if (ts !== undefined && !(ts instanceof Date)) return ts;

    const found: { sensor: string; value: number | null; entry?: z.output<typeof sensorEntry> }[] = [];
    if (Array.isArray(config.values)) {
      for (const entry of config.values) {
        const value = readPath(json, segmentsOf(entry.path));
        if (value === MISSING) issues.push({ path: shown(entry.path), message: 'required' });
        else if (!isValue(value)) issues.push({ path: shown(entry.path), message: VALUE_RULE });
        else found.push({ sensor: entry.sensor, value, entry });
      }
    } else {
      const where = config.values.path;
      const object = readPath(json, segmentsOf(where));
      if (typeof object !== 'object' || object === null || Array.isArray(object)) {
        issues.push({
          path: shown(where),
          message: object === MISSING ? 'required' : 'must be an object of {"<sensor id>": number|null}',
        });
      } else {
        if (exceedsItemLimit(object)) return tooLargeFailure(shown(where));
        const prefix = where === '' ? '' : `${where}.`;
        for (const [sensor, value] of Object.entries(object)) {
          if (!isIdent(sensor))
            issues.push({
              path: `${prefix}${sensor}`.slice(0, 200),
              message: 'key must be a sensor id (1–64 characters of A-Z a-z 0-9 _ . -)',
            });
          else if (!isValue(value)) issues.push({ path: `${prefix}${sensor}`, message: VALUE_RULE });
          else found.push({ sensor, value });
        }
      }
    }
    if (issues.length > 0 || gateway === undefined || datalogger === undefined || ts === undefined)
      return issuesFailure(issues);

    const sensors: SensorRow[] = [];
    const readings: ReadingRow[] = [];
    for (const { sensor, value, entry } of found) {
      sensors.push({
        gatewayIdent: gateway,
        dataloggerIdent: datalogger,
        ident: sensor,
        name: entry?.name,
        kind: entry?.kind,
        unit: entry?.unit,
      });
      readings.push({
        gatewayIdent: gateway,
        dataloggerIdent: datalogger,
        sensorIdent: sensor,
        ts,
        value,
        quality: null,
      });
    }
    return {
      ok: true,
      rows: {
        gateways: [{ ident: gateway }],
        dataloggers: [{ gatewayIdent: gateway, ident: datalogger }],
        sensors,
        readings,
      },
    };
  }),
};
