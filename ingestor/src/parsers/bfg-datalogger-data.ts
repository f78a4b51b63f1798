import { z } from 'zod';
import {
  fromSchema,
  futureTimestampFailure,
  identSchema,
  schemaFailure,
  timestampSchema,
  tooManyItems,
  type ParseFailure,
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
const dataSchema = z.object({
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

export const bfgDataloggerDataParser: Parser = fromSchema({
  key: 'bfg.datalogger-data.v1',
  description: 'BFG datalogger readings: canonical {ts, readings: [...]} or compact {ts, values: {...}}',
  schema: dataSchema,
  devices: ['gateway', 'datalogger'],
  // Before zod: a million-element array is rejected by its length, not by walking it.
  precheck: (json) => tooManyItems(json, 'readings') ?? tooManyItems(json, 'values') ?? reservedKey(json),
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
    // reading of a sensor wins, as the database stores each (sensor, ts) once.
    const latest = new Map<string, { value: number | null; quality: Quality | null }>();
    if (data.readings) {
      for (const r of data.readings) latest.set(r.sensor, { value: r.value, quality: r.quality ?? null });
    } else if (data.values) {
      for (const [sensor, value] of Object.entries(data.values)) latest.set(sensor, { value, quality: null });
    }

    const sensors: SensorRow[] = [];
    const readings: ReadingRow[] = [];
    for (const [sensor, r] of latest) {
      // Ident only: a sensor never seen before is created; kind and unit come with the next info.
      sensors.push({ gatewayIdent: gateway, dataloggerIdent: datalogger, ident: sensor });
      readings.push({
        gatewayIdent: gateway,
        dataloggerIdent: datalogger,
        sensorIdent: sensor,
        ts: data.ts,
        value: r.value,
        quality: r.quality,
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
  },
});
