import { z } from 'zod';
import { fromSchema, futureTimestampFailure, labelSchema, timestampSchema } from './common.ts';
import type { Parser } from './types.ts';

/**
 * `{site}/gateway/{gateway}/status`, retained, and also the gateway's LWT `{"online": false}`.
 * Only `online` is required: the broker publishes the LWT verbatim, without a `ts`, so its time
 * is the receive time. Absent fields leave the stored value alone; `null` clears nothing either
 * (the writer coalesces), it is merely accepted.
 */
const statusSchema = z.object({
  online: z.boolean(),
  ts: timestampSchema.optional(),
  firmware: labelSchema.nullish(),
  // Bounded to the column types (bigint, integer), so a wild value is a schema error, not a failed batch.
  uptime_s: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).nullish(),
  rssi_dbm: z.number().int().min(-1_000).max(1_000).nullish(),
});

export const bfgGatewayStatusParser: Parser = fromSchema({
  key: 'bfg.gateway-status.v1',
  description: 'BFG gateway status (retained, also the LWT): online flag, firmware, uptime, RSSI',
  schema: statusSchema,
  devices: ['gateway'],
  normalize(data, ctx, { gateway }) {
    const statusAt = data.ts ?? ctx.receivedAt;
    const future = futureTimestampFailure(statusAt, ctx.receivedAt, 'ts');
    if (future) return future;
    return {
      ok: true,
      rows: {
        gateways: [
          {
            ident: gateway,
            online: data.online,
            firmware: data.firmware,
            uptimeS: data.uptime_s,
            rssiDbm: data.rssi_dbm,
            statusAt,
          },
        ],
        dataloggers: [],
        sensors: [],
        readings: [],
      },
    };
  },
});
