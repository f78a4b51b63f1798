import path from 'node:path';
import { getFreePort, loadLocalConfig, type LocalConfig } from '@bfg/local';

/**
 * The local stack's configuration as the e2e suite and the dashboard benchmark run it: every
 * service on a free loopback port, the data under `dir`, `extra` on top (e.g. BFG_SIMULATE).
 */
export async function freePortStackConfig(dir: string, extra: Record<string, string> = {}): Promise<LocalConfig> {
  return loadLocalConfig({
    BFG_DATA_DIR: path.join(dir, 'data'),
    BFG_DB_PORT: String(await getFreePort()),
    BFG_MQTT_PORT: String(await getFreePort()),
    BFG_REALTIME_PORT: String(await getFreePort()),
    BFG_WEB_PORT: String(await getFreePort()),
    BFG_LISTEN_HOST: '127.0.0.1',
    ...extra,
  });
}
