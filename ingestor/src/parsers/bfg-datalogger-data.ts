import { z } from 'zod';
import {
  fastTimestamp,
  fromSchema,
  futureTimestampFailure,
  identSchema,
  isIdent,
  schemaFailure,
  timestampSchema,
  tooManyItems,
  type ParseFailure,
  type SchemaParserSpec,
} from './common.ts';
import type { Parser, Quality, ReadingRow, SensorRow } from './types.ts';

/**
 * `{site}/gateway/{gateway}/datalogger/{datalogger}/data`: one timestamp, many readings, in the
 * canonical form `{"ts", "seq"?, "readings": [{"sensor", "value", "quality"?}]}` or the compact
 * form `{"ts", "values": {"<sensor>": <value>}}`.
 */

/** A device sending "21.4" has a bug worth seeing in the log; coercing would hide it. */
const valueSchema = z.number({ error: 'must be a finite number or null (strings are not coerced)' }).nullable();

const readingSchema = z.object({
  sensor: identSchema,
  value: valueSchema,
  quality: z.enum(['good', 'suspect', 'bad']).nullish(),
});

/**
 * Both forms in one object schema rather than a union: a union reports a failure at the root,
 * while here a bad reading is reported at its own path (`readings.0.value`). Exactly one of
 * readings/values is required; normalize checks that.
 */
export const dataSchema = z.object({
  ts: timestampSchema,
  // The device's message counter: validated for type, not stored (duplicates are caught by (sensor, ts)).
  seq: z.number().int().nonnegative().optional(),
  readings: z.array(readingSchema).optional(),
  values: z.record(identSchema, valueSchema).optional(),
});

/**
 * `__proto__` passes the id rule, but zod strips it from a record's output (assigning it would
 * set the prototype), so the reading would vanish without a trace; an explicit error instead.
 */
function reservedKey(json: unknown): ParseFailure | undefined {
  const values = typeof json === 'object' && json !== null ? (json as Record<string, unknown>)['values'] : undefined;
  if (typeof values !== 'object' || values === null || !Object.hasOwn(values, '__proto__')) return undefined;
  return schemaFailure('values.__proto__: the sensor id __proto__ is reserved', ['values.__proto__']);
}

type DataPayload = z.output<typeof dataSchema>;
type Reading = NonNullable<DataPayload['readings']>[number];

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
/** valueSchema without zod: a finite number (z.number() refuses infinities, e.g. JSON's 1e999) or null. */
const isValue = (v: unknown): v is number | null => v === null || (typeof v === 'number' && Number.isFinite(v));
const isQuality = (q: unknown): q is Quality | null | undefined =>
  q === undefined || q === null || q === 'good' || q === 'suspect' || q === 'bad';
/**
 * A key holding `undefined` (never from JSON.parse) stays in zod's output; rather than copy that,
 * such input goes to zod.
 */
const undefinedKey = (o: Record<string, unknown>, keys: readonly string[]) =>
  keys.some((k) => o[k] === undefined && Object.hasOwn(o, k));

/** No sensor twice among a message's readings (compared pairwise while that is cheap). */
function eachOnce(list: readonly Reading[]): boolean {
  if (list.length > 16) return new Set(list.map((r) => r.sensor)).size === list.length;
  for (let i = 1; i < list.length; i++)
    for (let j = 0; j < i; j++) if (list[j]!.sensor === list[i]!.sensor) return false;
  return true;
}

/**
 * dataSchema's output for a payload in either form with nothing wrong in it — what every healthy
 * device sends — built without zod's walk; undefined for anything else, which zod then parses (and
 * reports). Like zod's objects it ignores unknown keys and leaves absent optional ones absent.
 */
export function fastDataParse(json: unknown): DataPayload | undefined {
  if (!isPlainObject(json)) return undefined;
  const ts = fastTimestamp(json['ts']);
  if (ts === undefined) return undefined;
  const { seq, readings, values } = json;
  if (undefinedKey(json, ['seq', 'readings', 'values'])) return undefined;
  if (seq !== undefined && !(typeof seq === 'number' && Number.isSafeInteger(seq) && seq >= 0)) return undefined;
  // Neither form, or both: zod accepts the object, normalize says what is wrong.
  if ((readings === undefined) === (values === undefined)) return undefined;
  const out: DataPayload = seq === undefined ? { ts } : { ts, seq };
  if (readings !== undefined) {
    if (!Array.isArray(readings)) return undefined;
    const parsed = new Array<Reading>(readings.length);
    for (let i = 0; i < readings.length; i++) {
      const r: unknown = readings[i];
      if (!isPlainObject(r)) return undefined;
      const { sensor, value, quality } = r;
      if (typeof sensor !== 'string' || !isIdent(sensor) || !isValue(value) || !isQuality(quality)) return undefined;
      if (quality === undefined && Object.hasOwn(r, 'quality')) return undefined;
      parsed[i] = quality === undefined ? { sensor, value } : { sensor, value, quality };
    }
    out.readings = parsed;
  } else {
    if (!isPlainObject(values)) return undefined;
    const parsed: Record<string, number | null> = {};
    for (const sensor of Object.keys(values)) {
      const value = values[sensor];
      if (!isIdent(sensor) || sensor === '__proto__' || !isValue(value)) return undefined;
      parsed[sensor] = value;
    }
    out.values = parsed;
  }
  return out;
}

/** The parser's parts (exported so that tests can build it without the fast path, zod alone). */
export const dataParserSpec: SchemaParserSpec<typeof dataSchema, 'gateway' | 'datalogger'> = {
  key: 'bfg.datalogger-data.v1',
  description: 'BFG datalogger readings: canonical {ts, readings: [...]} or compact {ts, values: {...}}',
  schema: dataSchema,
  devices: ['gateway', 'datalogger'],
  // Before zod: a million-element array is rejected by its length, not by walking it.
  precheck: (json) => tooManyItems(json, 'readings') ?? tooManyItems(json, 'values') ?? reservedKey(json),
  fastParse: fastDataParse,
  normalize(data, ctx, { gateway, datalogger }) {
    if (data.readings === undefined && data.values === undefined) {
      return schemaFailure('readings: required (or the compact values object)', ['readings']);
    }
    if (data.readings !== undefined && data.values !== undefined) {
      return schemaFailure('readings, values: a message carries one form, not both', ['readings', 'values']);
    }
    const future = futureTimestampFailure(data.ts, ctx.receivedAt, 'ts');
    if (future) return future;

    // All readings of a message share its ts, so (sensor, ts) is unique per sensor: the last
    // reading of a sensor wins, as the database stores each (sensor, ts) once. The rows are held
    // until their batch commits, so they are made at their exact size, and without temporaries
    // when every sensor appears once (nearly always; a values object cannot repeat one).
    const reading = (sensorIdent: string, value: number | null, quality: Quality | null): ReadingRow => ({
      gatewayIdent: gateway,
      dataloggerIdent: datalogger,
      sensorIdent,
      ts: data.ts,
      value,
      quality,
    });
    let readings: ReadingRow[];
    if (data.values) {
      const values = data.values;
      readings = Object.keys(values).map((sensor) => reading(sensor, values[sensor]!, null));
    } else if (eachOnce(data.readings!)) {
      readings = data.readings!.map((r) => reading(r.sensor, r.value, r.quality ?? null));
    } else {
      const last = new Map<string, Reading>();
      for (const r of data.readings!) last.set(r.sensor, r);
      readings = [...last].map(([sensor, r]) => reading(sensor, r.value, r.quality ?? null));
    }
    // Ident only: a sensor never seen before is created; kind and unit come with the next info.
    const sensors: SensorRow[] = readings.map((r) => ({
      gatewayIdent: gateway,
      dataloggerIdent: datalogger,
      ident: r.sensorIdent,
    }));
    return {
      ok: true,
      rows: {
        gateways: [{ ident: gateway }],
        dataloggers: [{ gatewayIdent: gateway, ident: datalogger }],
        sensors,
        readings,
      },
    };
  },
};

export const bfgDataloggerDataParser: Parser = fromSchema(dataParserSpec);
