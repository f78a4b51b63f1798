import { randomBytes, randomUUID } from 'node:crypto';
import { createClient, type RealtimeChannel } from '@supabase/supabase-js';
import mqtt from 'mqtt';
import postgres, { type Sql } from 'postgres';
import { getFreePort, startRealtimeServer } from '@bfg/local';
import { signJwt } from '../../support/jwt.ts';
import { waitFor } from '../../support/wait-for.ts';
import type { BenchIngestor } from './bench-ingestor.ts';
import { BENCH_SENSORS } from './ingest-load.ts';

const GATEWAYS = 5;
const DATALOGGERS_PER_GATEWAY = 6;

export interface LatencyOptions {
  /** The bench's pool (superuser). */
  sql: Sql;
  databaseUrl: string;
  brokerUrl: string;
  /** A site whose connection follows the data pattern at QoS 1 (created, not yet ingested). */
  site: { id: string; connectionId: string };
  rates: number[];
  seconds: number;
  start: () => Promise<BenchIngestor>;
  waitSubscribed: () => Promise<unknown>;
}

const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
const ms = (n: number) => `${Math.round(n)} ms`;

function subscribed(channel: RealtimeChannel): Promise<void> {
  return new Promise((resolve, reject) => {
    channel.subscribe((state, err) => {
      if (String(state) === 'SUBSCRIBED') resolve();
      else if (String(state) !== 'CLOSED')
        reject(new Error(`${channel.topic}: ${String(state)} ${err?.message ?? ''}`));
    });
  });
}

/**
 * Publish → row committed and publish → browser callback at steady rates. One site of 120
 * sensors (5 gateways × 6 dataloggers × 4); each message's readings carry its publish time as ts
 * (strictly increasing per datalogger). Committed: Postgres' commit timestamp of the transaction
 * that stored the reading (track_commit_timestamp), one reading per message. Callback: a
 * supabase-js client signed in as a member of the site follows its private channel (the coalesced
 * `changes` broadcast, at most BFG_REALTIME_MAX_RATE a second) through the local Realtime server,
 * and counts each sensor value once, when it first arrives (a coalesced message carries the
 * latest value per sensor, so values overtaken within one interval are never sent).
 */
export async function measureLatency(options: LatencyOptions): Promise<void> {
  const { sql, site } = options;
  const secret = randomBytes(32).toString('hex');
  const realtimeSql = postgres(options.databaseUrl, { max: 4, onnotice: () => undefined });
  const server = await startRealtimeServer({
    port: await getFreePort(),
    jwtSecret: secret,
    sql: realtimeSql,
    databaseUrl: options.databaseUrl,
  });
  const [slug] = await sql<{ slug: string }[]>`select slug from site where id = ${site.id}`;
  const userId = randomUUID();
  await sql`insert into auth.users (id, email) values (${userId}, ${`${userId}@example.test`})`;
  await sql`insert into site_member (site_id, user_id) values (${site.id}, ${userId})`;
  const ingestor = await options.start();
  const publisher = await mqtt.connectAsync(options.brokerUrl, {
    clientId: `bench-pub-${randomBytes(3).toString('hex')}`,
  });
  const client = createClient(server.url, await signJwt(secret, { role: 'anon' }), {
    accessToken: () =>
      signJwt(secret, {
        sub: userId,
        role: 'authenticated',
        email: `${userId}@example.test`,
        app_metadata: { provider: 'email' },
      }),
    auth: { persistSession: false },
  });
  try {
    await options.waitSubscribed();
    const dataloggers = Array.from({ length: GATEWAYS * DATALOGGERS_PER_GATEWAY }, (_, i) => ({
      topic: `${slug!.slug}/gateway/gw-${Math.floor(i / DATALOGGERS_PER_GATEWAY)}/datalogger/dl-${i % DATALOGGERS_PER_GATEWAY}/data`,
      lastTs: 0,
    }));
    let next = 0;
    const publishOne = () => {
      const logger = dataloggers[next++ % dataloggers.length]!;
      logger.lastTs = Math.max(Date.now(), logger.lastTs + 1);
      const payload = JSON.stringify({
        ts: new Date(logger.lastTs).toISOString(),
        readings: BENCH_SENSORS.map((s) => ({ sensor: s, value: Math.round(Math.random() * 1000) / 10 })),
      });
      publisher.publish(logger.topic, payload, { qos: 1 });
    };
    /** `rate` messages/s for `seconds`, in 10 ms ticks, catching up on late ticks. */
    const publishAt = async (rate: number, seconds: number) => {
      const started = performance.now();
      let sent = 0;
      while (performance.now() - started < seconds * 1000) {
        const due = Math.floor(((performance.now() - started) / 1000) * rate);
        for (; sent < due; sent++) publishOne();
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      return sent;
    };

    // Every device exists before anyone watches.
    for (let i = 0; i < dataloggers.length; i++) publishOne();
    await waitFor(
      'the sensors',
      async () => (await sql<{ n: number }[]>`select count(*)::int as n from sensor where site_id = ${site.id}`)[0]!.n,
      { accept: (n) => n === dataloggers.length * BENCH_SENSORS.length, timeoutMs: 30_000 },
    );
    await client.realtime.setAuth();
    const seen = new Map<number, number>();
    let callbacks: number[] = [];
    let broadcasts = 0;
    await subscribed(
      client
        .channel(`site:${site.id}`, { config: { private: true } })
        .on(
          'broadcast',
          { event: 'changes' },
          (m: { payload: { sensors?: { id: number; last_value_at?: string }[] } }) => {
            broadcasts++;
            const now = Date.now();
            for (const row of m.payload.sensors ?? []) {
              if (!row.last_value_at) continue;
              const at = Date.parse(row.last_value_at);
              if (at <= (seen.get(row.id) ?? 0)) continue;
              seen.set(row.id, at);
              callbacks.push(now - at);
            }
          },
        ),
    );
    await waitFor(
      'a site broadcast to arrive',
      () => {
        publishOne();
        return broadcasts > 0;
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    );

    console.log('Latency (QoS 1, one site of 120 sensors, BFG_REALTIME_MAX_RATE default):');
    console.log(
      '| msg/s | published | publish → committed p50 | p95 | p99 | publish → callback p50 | p95 | p99 | broadcasts/s |',
    );
    console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const rate of options.rates) {
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      const from = new Date();
      callbacks = [];
      broadcasts = 0;
      const started = performance.now();
      const sent = await publishAt(rate, options.seconds);
      const seconds = (performance.now() - started) / 1000;
      // One reading per message (its first sensor), with its transaction's commit time.
      const committed = async () =>
        sql<{ ms: number }[]>`
          select (extract(epoch from pg_xact_commit_timestamp(r.xmin)) - extract(epoch from r.ts)) * 1000 as ms
          from sensor_reading r join sensor s on s.id = r.sensor_id
          where s.site_id = ${site.id} and s.ident = ${BENCH_SENSORS[0]!} and r.ts >= ${from}`;
      const rows = await waitFor('the readings committed', committed, {
        accept: (r) => r.length >= sent,
        timeoutMs: 60_000,
        intervalMs: 250,
      });
      // The last values' broadcast goes out within 1/BFG_REALTIME_MAX_RATE s.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      const commit = rows.map((r) => Number(r.ms)).sort((a, b) => a - b);
      const callback = [...callbacks].sort((a, b) => a - b);
      console.log(
        `| ${rate} | ${sent} | ${ms(percentile(commit, 50))} | ${ms(percentile(commit, 95))} | ${ms(percentile(commit, 99))} | ` +
          `${ms(percentile(callback, 50))} | ${ms(percentile(callback, 95))} | ${ms(percentile(callback, 99))} | ${(broadcasts / seconds).toFixed(1)} |`,
      );
    }
    console.log('');
  } finally {
    await client.removeAllChannels();
    await publisher.endAsync();
    await ingestor.stop();
    await sql`update mqtt_connection set is_active = false where id = ${site.connectionId}`;
    await server.close();
    await realtimeSql.end();
  }
}
