import type { TransactionSql } from 'postgres';
import { z } from 'zod';

export const connectionOption = z.object({ id: z.coerce.number().int(), site_name: z.string() });
export type ConnectionOption = z.infer<typeof connectionOption>;

/** The connections the user may see, for filter menus. */
export async function listConnectionOptions(tx: TransactionSql): Promise<ConnectionOption[]> {
  const rows = await tx`select c.id, s.name as site_name from public.mqtt_connection c join public.site s on s.id = c.site_id order by s.name, c.id`;
  return z.array(connectionOption).parse(rows);
}
