import type { TransactionSql } from 'postgres';
import { z } from 'zod';

export const connectionOption = z.object({
  id: z.coerce.number().int(),
  site_id: z.coerce.number().int(),
  site_name: z.string(),
});
export type ConnectionOption = z.infer<typeof connectionOption>;

/** The connections the user may see, for filter menus (and the site channels that announce their changes). */
export async function listConnectionOptions(tx: TransactionSql): Promise<ConnectionOption[]> {
  const rows =
    await tx`select c.id, c.site_id, s.name as site_name from public.mqtt_connection c join public.site s on s.id = c.site_id order by s.name, c.id`;
  return z.array(connectionOption).parse(rows);
}
