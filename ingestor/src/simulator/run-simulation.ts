import mqtt, { type MqttClient } from 'mqtt';
import { badPayloads } from './bad-payloads.ts';
import { buildFleet, sampleValue, topics, type SimGateway } from './fleet.ts';

export interface SimulationOptions {
  url: string;
  username?: string | undefined;
  password?: string | undefined;
  sites: string[];
  gateways: number;
  dataloggers: number;
  sensors: number;
  /** Seconds between two data messages of one datalogger. */
  intervalS: number;
  /** Share (0–1) of data messages replaced by a bad payload (cycling through every kind). */
  badFraction: number;
  qos: 0 | 1;
  /** Stop after this many data messages in total (0 = run until stopped). */
  count: number;
  /** Also send the compact data form for every other message. */
  mixForms: boolean;
}

export interface SimulationStats {
  data: number;
  bad: number;
  readings: number;
}

/**
 * Publishes a fleet: one MQTT client per gateway, with its status retained and as its last will
 * (`{"online":false}`), each datalogger's info retained, then data every `intervalS`. Resolves when
 * `count` data messages were sent or `signal` aborts; gateways then publish offline and disconnect.
 */
export async function runSimulation(
  options: SimulationOptions,
  signal: AbortSignal,
  log: (line: string) => void = () => undefined,
): Promise<SimulationStats> {
  const fleet = buildFleet(options);
  const stats: SimulationStats = { data: 0, bad: 0, readings: 0 };
  const clients = await Promise.all(fleet.map((gw) => connectGateway(gw, options)));
  log(`simulating ${fleet.length} gateway(s) on ${options.url}`);
  let badIndex = 0;
  let sent = 0;
  const done = new Promise<void>((resolve) => {
    const stop = () => resolve();
    signal.addEventListener('abort', stop, { once: true });
    const perTick = fleet.reduce((n, gw) => n + gw.dataloggers.length, 0);
    const tickMs = Math.max(1, (options.intervalS * 1000) / perTick);
    let cursor = 0;
    const flat = fleet.flatMap((gw, g) => gw.dataloggers.map((dl) => ({ gw, dl, client: clients[g]! })));
    const timer = setInterval(() => {
      const { gw, dl, client } = flat[cursor++ % flat.length]!;
      const topic = topics.data(gw, dl);
      if (options.badFraction > 0 && Math.random() < options.badFraction) {
        const bad = badPayloads[badIndex++ % badPayloads.length]!(topic, gw.site);
        client.publish(bad.topic, bad.payload, { qos: options.qos });
        stats.bad += 1;
      } else {
        const at = new Date();
        const compact = options.mixForms && sent % 2 === 1;
        const payload = compact
          ? {
              ts: Math.floor(at.getTime() / 1000),
              values: Object.fromEntries(dl.sensors.map((s) => [s.id, sampleValue(s, at)])),
            }
          : {
              ts: at.toISOString(),
              seq: sent,
              readings: dl.sensors.map((s) => ({ sensor: s.id, value: sampleValue(s, at), quality: 'good' })),
            };
        client.publish(topic, JSON.stringify(payload), { qos: options.qos });
        stats.data += 1;
        stats.readings += dl.sensors.length;
      }
      sent += 1;
      if (options.count > 0 && sent >= options.count) {
        clearInterval(timer);
        resolve();
      }
    }, tickMs);
    signal.addEventListener('abort', () => clearInterval(timer), { once: true });
  });
  await done;
  await Promise.all(
    fleet.map(async (gw, g) => {
      const client = clients[g]!;
      await client.publishAsync(topics.status(gw), JSON.stringify({ online: false, ts: new Date().toISOString() }), {
        qos: 1,
        retain: true,
      });
      await client.endAsync();
    }),
  );
  return stats;
}

async function connectGateway(gw: SimGateway, options: SimulationOptions): Promise<MqttClient> {
  const client = await mqtt.connectAsync(options.url, {
    clientId: `bfg-sim-${gw.site}-${gw.id}-${process.pid}`,
    ...(options.username ? { username: options.username } : {}),
    ...(options.password ? { password: options.password } : {}),
    will: { topic: topics.status(gw), payload: Buffer.from('{"online":false}'), qos: 1, retain: true },
    reconnectPeriod: 1000,
  });
  await client.publishAsync(
    topics.status(gw),
    JSON.stringify({
      online: true,
      ts: new Date().toISOString(),
      firmware: gw.firmware,
      uptime_s: Math.floor(process.uptime()),
      rssi_dbm: -60 - Math.floor(Math.random() * 20),
    }),
    { qos: 1, retain: true },
  );
  for (const dl of gw.dataloggers) {
    await client.publishAsync(
      topics.info(gw, dl),
      JSON.stringify({
        model: dl.model,
        serial: dl.serial,
        firmware: '1.9.0',
        interval_s: dl.intervalS,
        sensors: dl.sensors.map((s) => ({ id: s.id, name: s.name, kind: s.kind, unit: s.unit })),
      }),
      { qos: 1, retain: true },
    );
  }
  return client;
}
