import { z } from 'zod';
import { MAX_ITEMS_PER_MESSAGE, fromSchema, identSchema, labelSchema, tooManyItems } from './common.ts';
import type { Parser, SensorRow } from './types.ts';

/**
 * `{site}/gateway/{gateway}/datalogger/{datalogger}/info`, retained: what the datalogger is and
 * its sensor catalogue. Every field is optional except a sensor's `id`: a datalogger may describe
 * itself piecemeal, and absent fields leave the stored values alone.
 */
const sensorSchema = z.object({
  id: identSchema,
  name: labelSchema.nullish(),
  kind: labelSchema.nullish(),
  unit: labelSchema.nullish(),
});

const infoSchema = z.object({
  model: labelSchema.nullish(),
  serial: labelSchema.nullish(),
  firmware: labelSchema.nullish(),
  // interval_s drives staleness; the column is a positive integer.
  interval_s: z.number().int().positive().max(2_147_483_647).nullish(),
  // The precheck already bounds the length; the max here keeps the schema honest on its own.
  sensors: z.array(sensorSchema).max(MAX_ITEMS_PER_MESSAGE).optional(),
});

export const bfgDataloggerInfoParser: Parser = fromSchema({
  key: 'bfg.datalogger-info.v1',
  description: 'BFG datalogger description (retained): model, serial, firmware, interval and sensor catalogue',
  schema: infoSchema,
  devices: ['gateway', 'datalogger'],
  precheck: (json) => tooManyItems(json, 'sensors'),
  normalize(data, ctx, { gateway, datalogger }) {
    // One row per sensor id, the last description winning: the writer upserts each sensor once.
    const sensors = new Map<string, SensorRow>();
    for (const s of data.sensors ?? []) {
      sensors.set(s.id, {
        gatewayIdent: gateway,
        dataloggerIdent: datalogger,
        ident: s.id,
        name: s.name,
        kind: s.kind,
        unit: s.unit,
      });
    }
    return {
      ok: true,
      rows: {
        gateways: [{ ident: gateway }],
        dataloggers: [
          {
            gatewayIdent: gateway,
            ident: datalogger,
            model: data.model,
            serial: data.serial,
            firmware: data.firmware,
            intervalS: data.interval_s,
            // infoAt marks the row as carrying a description (the writer only then copies the fields).
            infoAt: ctx.receivedAt,
          },
        ],
        sensors: [...sensors.values()],
        readings: [],
      },
    };
  },
});
