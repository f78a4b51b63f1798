import { randomBytes } from 'node:crypto';
import type { Sql } from 'postgres';

/** Small factories: each test makes the rows it needs (no shared seed between tests). */

export async function newSite(sql: Sql, fields: { slug?: string; name?: string; isActive?: boolean } = {}) {
  const slug = fields.slug ?? `site-${randomBytes(4).toString('hex')}`;
  const [row] = await sql<{ id: string; slug: string }[]>`
    insert into site (slug, name, is_active)
    values (${slug}, ${fields.name ?? slug}, ${fields.isActive ?? true})
    returning id, slug`;
  return row!;
}

export async function newConnection(
  sql: Sql,
  siteId: string,
  fields: { host?: string; port?: number; isActive?: boolean } = {},
) {
  const [row] = await sql<{ id: string; clientId: string; subscribeFilters: string[] }[]>`
    insert into mqtt_connection (site_id, host, port, is_active)
    values (${siteId}, ${fields.host ?? '127.0.0.1'}, ${fields.port ?? 1883}, ${fields.isActive ?? false})
    returning id, client_id as "clientId", subscribe_filters as "subscribeFilters"`;
  return row!;
}

export async function addMember(sql: Sql, siteId: string, userId: string): Promise<void> {
  await sql`insert into site_member (site_id, user_id) values (${siteId}, ${userId})`;
}

/** A gateway → datalogger → sensor chain with one reading, as the ingestor would create it. */
export async function newDeviceTree(sql: Sql, siteId: string) {
  const [gateway] = await sql<{ id: string }[]>`
    insert into gateway (site_id, ident, online) values (${siteId}, 'gw-1', true) returning id`;
  const [datalogger] = await sql<{ id: string }[]>`
    insert into datalogger (site_id, gateway_id, ident, interval_s) values (${siteId}, ${gateway!.id}, 'dl-1', 60) returning id`;
  const [sensor] = await sql<{ id: string }[]>`
    insert into sensor (site_id, datalogger_id, ident, kind, unit) values (${siteId}, ${datalogger!.id}, 't_air', 'temperature', '°C')
    returning id`;
  await sql`insert into sensor_reading (sensor_id, ts, value) values (${sensor!.id}, now(), 21.5)`;
  return { gatewayId: gateway!.id, dataloggerId: datalogger!.id, sensorId: sensor!.id };
}
