import type { MqttClient } from 'mqtt';
import type postgres from 'postgres';
import { connectClient } from './mqtt-client.ts';

/** Message i carries one reading of sensor `t` at a distinct second, so stored counts say exactly what arrived. */
export const readingPayload = (i: number): string =>
  JSON.stringify({
    ts: new Date(Date.UTC(2026, 10, 1) + i * 1000).toISOString(),
    readings: [{ sensor: 't', value: i }],
  });

export interface SustainedPublisher {
  /** Messages the broker acknowledged so far (QoS 1 PUBACK), over all topics. */
  readonly acknowledged: number;
  /** Messages handed to MQTT.js so far. */
  readonly sent: number;
  /** Stops publishing and resolves, once every message sent was acknowledged, with the count per topic. */
  stop(): Promise<Map<string, number>>;
}

/**
 * Publishes QoS 1 messages 0, 1, 2, … to each topic at `ratePerS` (per topic) until stopped, with
 * at most `window` unacknowledged at a time (MQTT.js holds them across a broker restart and sends
 * them again when it is back). Messages are the same sequence on every topic.
 */
export async function startPublishing(
  url: string,
  topics: readonly string[],
  options: { ratePerS: number; window?: number },
): Promise<SustainedPublisher> {
  const client: MqttClient = await connectClient(url, { reconnectPeriod: 200, clean: true });
  const window = options.window ?? 2_000;
  const next = new Map(topics.map((t) => [t, 0]));
  let sent = 0;
  let acknowledged = 0;
  let stopped = false;
  const pending = new Set<Promise<unknown>>();
  const started = performance.now();
  const tick = () => {
    if (stopped) return;
    const due = Math.floor(((performance.now() - started) / 1000) * options.ratePerS);
    for (const topic of topics) {
      while (next.get(topic)! < due && pending.size < window) {
        const i = next.get(topic)!;
        next.set(topic, i + 1);
        sent += 1;
        const p = client.publishAsync(topic, readingPayload(i), { qos: 1 }).then(() => {
          acknowledged += 1;
        });
        pending.add(p);
        void p.finally(() => pending.delete(p));
      }
    }
  };
  const timer = setInterval(tick, 10);
  return {
    get acknowledged() {
      return acknowledged;
    },
    get sent() {
      return sent;
    },
    async stop() {
      stopped = true;
      clearInterval(timer);
      await Promise.all(pending);
      await client.endAsync();
      return new Map(next);
    },
  };
}

/** Readings stored per sensor path `<site slug>` (one sensor per site in these tests): count, distinct values, min, max. */
export async function storedPerSite(
  sql: postgres.Sql,
): Promise<Map<string, { count: number; distinct: number; min: number; max: number }>> {
  const rows = await sql<{ slug: string; count: number; distinct: number; min: number; max: number }[]>`
    select s.slug, count(*)::int as count, count(distinct r.value)::int as distinct,
           min(r.value)::int as min, max(r.value)::int as max
    from sensor_reading r
    join sensor x on x.id = r.sensor_id
    join site s on s.id = x.site_id
    group by s.slug`;
  return new Map(rows.map((r) => [r.slug, { count: r.count, distinct: r.distinct, min: r.min, max: r.max }]));
}
