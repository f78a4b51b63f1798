import { z } from 'zod';
import { dataloggerRow, gatewayRow, sensorRow } from '../rows.ts';

/**
 * What changed on a site since its previous message: the `changes` broadcast on the private
 * channel `site:<id>`, sent by private.send_site_changes at most BFG_REALTIME_MAX_RATE times a
 * second per site (supabase/migrations/20261201000200_coalesced_site_changes.sql). Rows are the
 * devices as they are now; `removed` are devices that left the site; `topics` / `parsing_log` name
 * the connections whose discovered topics / parsing log changed (those pages reload their view).
 */
export const siteChanges = z.object({
  gateways: z.array(gatewayRow),
  dataloggers: z.array(dataloggerRow),
  sensors: z.array(sensorRow),
  removed: z.object({
    gateways: z.array(z.number().int()),
    dataloggers: z.array(z.number().int()),
    sensors: z.array(z.number().int()),
  }),
  topics: z.array(z.number().int()),
  parsing_log: z.array(z.number().int()),
});
export type SiteChanges = z.infer<typeof siteChanges>;

/** The broadcast event on `site:<id>`. */
export const SITE_CHANGES_EVENT = 'changes';

/**
 * At most this many site channels per page. Supabase allows 100 channels per connection, and a
 * page may hold a few more of its own while the previous page's are still leaving.
 */
export const MAX_SITE_CHANNELS = 50;

/** Whether a message changes anything on the device pages (and not only topics or the parsing log). */
export function hasDeviceChanges(c: SiteChanges): boolean {
  return (
    c.gateways.length +
      c.dataloggers.length +
      c.sensors.length +
      c.removed.gateways.length +
      c.removed.dataloggers.length +
      c.removed.sensors.length >
    0
  );
}
