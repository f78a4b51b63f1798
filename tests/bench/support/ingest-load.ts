import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import mqtt from 'mqtt';

/** Datalogger data messages as the benchmarks publish (or archive) them. */
export interface LoadMessage {
  topic: string;
  payload: string;
}

export const BENCH_SENSORS = ['t_air', 'rh', 'p_atm', 'wind'];
export const DATA_PATTERN = '+site/gateway/+gateway/datalogger/+datalogger/data';
export const DATA_PARSER = 'bfg.datalogger-data.v1';

const LOAD_EPOCH = Date.UTC(2026, 10, 1);

/** Message `i` of a site's load: 4 readings, over 100 dataloggers, so (sensor, ts) never repeats. */
export function dataMessage(slug: string, i: number): LoadMessage {
  return {
    topic: `${slug}/gateway/gw-${i % 10}/datalogger/dl-${Math.floor(i / 10) % 10}/data`,
    payload: JSON.stringify({
      ts: new Date(LOAD_EPOCH + Math.floor(i / 100) * 1000).toISOString(),
      readings: BENCH_SENSORS.map((s, k) => ({ sensor: s, value: i + k / 10 })),
    }),
  };
}
/** `count` distinct payloads of 4 readings spread over 100 dataloggers, so (sensor, ts) never repeats. */
export function dataMessages(slug: string, count: number): LoadMessage[] {
  return Array.from({ length: count }, (_, i) => dataMessage(slug, i));
}

/** Messages by index: an array, or a generator of a million messages that are never all held at once. */
export interface MessageSource {
  readonly length: number;
  at(index: number): LoadMessage | undefined;
}

/** `count` messages of `dataMessage`, made as they are published. */
export function lazyDataMessages(slug: string, count: number): MessageSource {
  return { length: count, at: (i) => (i < count ? dataMessage(slug, i) : undefined) };
}

/** Publishes at full speed with a window of outstanding publishes (the pipe full, memory bounded). */
export async function publishAll(url: string, messages: MessageSource, qos: 0 | 1): Promise<void> {
  const client = await mqtt.connectAsync(url, { clientId: `bench-pub-${randomBytes(3).toString('hex')}` });
  const WINDOW = 1000;
  let next = 0;
  await Promise.all(
    Array.from({ length: WINDOW }, async () => {
      while (next < messages.length) {
        const m = messages.at(next++)!;
        await client.publishAsync(m.topic, m.payload, { qos });
      }
    }),
  );
  await client.endAsync();
}

/** Peak resident memory of a process so far (Linux). */
export function peakRssMb(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return kb / 1024;
}
