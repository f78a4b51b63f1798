import type { TransactionSql } from 'postgres';
import { z } from 'zod';
import {
  dataloggerRow,
  gatewayRow,
  sensorRow,
  type DataloggerRow,
  type GatewayRow,
  type SensorRow,
} from '../../rows.ts';

export interface DeviceSnapshot {
  gateways: GatewayRow[];
  dataloggers: DataloggerRow[];
  sensors: SensorRow[];
}

/** Every device of a site, as the user may see them. */
export async function loadSiteDevices(tx: TransactionSql, siteId: number): Promise<DeviceSnapshot> {
  const [gateways, dataloggers, sensors] = await Promise.all([
    tx`select * from public.gateway where site_id = ${siteId} order by ident`,
    tx`select * from public.datalogger where site_id = ${siteId} order by ident`,
    tx`select * from public.sensor where site_id = ${siteId} order by ident`,
  ]);
  return {
    gateways: z.array(gatewayRow).parse(gateways),
    dataloggers: z.array(dataloggerRow).parse(dataloggers),
    sensors: z.array(sensorRow).parse(sensors),
  };
}
