#!/usr/bin/env node
/**
 * `npm run bench:site-realtime`: what one open dashboard receives from one busy site.
 *
 * One site with 120 sensors (5 gateways × 6 dataloggers × 4 sensors) behind Mosquitto, the
 * ingestor (a separate process, as deployed) and the local Realtime server, all on this machine. A
 * supabase-js client signed in as a site member follows what the pages follow: the private site
 * channel (Broadcast from Database, any event), postgres_changes on mqtt_connection (Sites page), and
 * postgres_changes on discovered_topic and mqtt_parsing_log (what the Topics and Logs pages
 * followed before issue 9). For each publish rate (default 100 and 2,000 MQTT messages/s, 10 s
 * each) it prints the messages per second that subscriber received on each feed and the publish →
 * callback latency of the sensor values it was sent (the reading's ts is its publish time; a value
 * counts once, when it first arrives).
 *
 * Options: --rates 100,2000 --seconds 10 --max-rate 4 (BFG_REALTIME_MAX_RATE for the ingestor) --qos 1.
 */
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createClient, type RealtimeChannel } from '@supabase/supabase-js';
import mqtt from 'mqtt';
import postgres from 'postgres';
import { getFreePort, migrate, repoRoot, startEmbeddedPostgres, startRealtimeServer } from '@bfg/local';
import { signJwt } from '../support/jwt.ts';
import { startMosquitto } from '../support/mosquitto.ts';
import { makeTempDir } from '../support/temp-dir.ts';
import { waitFor } from '../support/wait-for.ts';

const { values } = parseArgs({
  options: {
    rates: { type: 'string', default: '100,2000' },
    seconds: { type: 'string', default: '10' },
    'max-rate': { type: 'string', default: '4' },
    qos: { type: 'string', default: '1' },
  },
});
const QOS = Number(values.qos) as 0 | 1;
const RATES = values.rates.split(',').map(Number);
const SECONDS = Number(values.seconds);
const GATEWAYS = 5;
const DATALOGGERS_PER_GATEWAY = 6;
const SENSORS = ['t_air', 'rh', 'p_atm', 'wind'];
const SLUG = 'bench';

const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

function subscribed(channel: RealtimeChannel): Promise<void> {
  return new Promise((resolve, reject) => {
    channel.subscribe((state, err) => {
      if (String(state) === 'SUBSCRIBED') resolve();
      else if (String(state) !== 'CLOSED')
        reject(new Error(`${channel.topic}: ${String(state)} ${err?.message ?? ''}`));
    });
  });
}

/** What the subscriber saw since the last reset. */
class Tally {
  broadcasts = 0;
  connectionChanges = 0;
  topicLogChanges = 0;
  latencies: number[] = [];
  /** Newest value timestamp per sensor already counted, so a value sent again is not measured twice. */
  private readonly newest = new Map<number, number>();

  reset(): void {
    this.broadcasts = 0;
    this.connectionChanges = 0;
    this.topicLogChanges = 0;
    this.latencies = [];
  }

  /** Sensor rows of either payload shape: `changes` ({sensors: [...]}) or the old `sensor_changed` ({rows: [...]}). */
  broadcast(event: string, payload: Record<string, unknown>): void {
    this.broadcasts++;
    const now = Date.now();
    const rows = (event === 'changes' ? payload['sensors'] : event === 'sensor_changed' ? payload['rows'] : []) as {
      id: number;
      last_value_at?: string | null;
    }[];
    for (const row of rows ?? []) {
      if (!row.last_value_at) continue;
      const at = Date.parse(row.last_value_at);
      if (at <= (this.newest.get(row.id) ?? 0)) continue;
      this.newest.set(row.id, at);
      this.latencies.push(now - at);
    }
  }
}

async function main(): Promise<void> {
  const dir = await makeTempDir('bench-site-rt');
  const pg = await startEmbeddedPostgres({
    dataDir: path.join(dir.path, 'pg'),
    port: await getFreePort(),
    password: randomBytes(12).toString('hex'),
  });
  const url = pg.urlFor('postgres');
  const sql = postgres(url, { max: 4, onnotice: () => undefined });
  const mosquitto = await startMosquitto();
  const secret = randomBytes(32).toString('hex');
  let ingestor: ReturnType<typeof spawn> | undefined;
  try {
    await migrate(sql);
    const server = await startRealtimeServer({ port: await getFreePort(), jwtSecret: secret, sql, databaseUrl: url });
    try {
      const [site] = await sql<
        { id: string }[]
      >`insert into site (slug, name) values (${SLUG}, 'Bench site') returning id`;
      const [conn] = await sql<{ id: string }[]>`
        insert into mqtt_connection (site_id, host, port, is_active, clean_start) values (${site!.id}, '127.0.0.1', ${mosquitto.port}, true, true) returning id`;
      await sql`insert into mqtt_topic (connection_id, pattern, parser, qos)
                values (${conn!.id}, '+site/gateway/+gateway/datalogger/+datalogger/data', 'bfg.datalogger-data.v1', ${QOS})`;
      const userId = randomUUID();
      await sql`insert into auth.users (id, email) values (${userId}, ${`${userId}@example.test`})`;
      await sql`insert into site_member (site_id, user_id) values (${site!.id}, ${userId})`;

      ingestor = spawn(process.execPath, [path.join(repoRoot, 'ingestor/src/main.ts')], {
        env: {
          ...process.env,
          DATABASE_URL: url,
          BFG_LOG_DIR: path.join(dir.path, 'logs'),
          BFG_LOG_LEVEL: 'warn',
          BFG_REALTIME_MAX_RATE: values['max-rate'],
        },
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      await waitFor(
        'the ingestor to subscribe',
        async () =>
          (
            await sql`select 1 from mqtt_connection where id = ${conn!.id} and status = 'connected' and status_detail like 'subscribed%'`
          ).length > 0,
        { timeoutMs: 30_000 },
      );

      const publisher = await mqtt.connectAsync(mosquitto.url, {
        clientId: `bench-pub-${randomBytes(3).toString('hex')}`,
      });
      const dataloggers = Array.from({ length: GATEWAYS * DATALOGGERS_PER_GATEWAY }, (_, i) => ({
        topic: `${SLUG}/gateway/gw-${Math.floor(i / DATALOGGERS_PER_GATEWAY)}/datalogger/dl-${i % DATALOGGERS_PER_GATEWAY}/data`,
        lastTs: 0,
      }));
      let next = 0;
      /** One data message of the next datalogger, stamped with the publish time (strictly increasing per datalogger). */
      const publishOne = () => {
        const logger = dataloggers[next++ % dataloggers.length]!;
        logger.lastTs = Math.max(Date.now(), logger.lastTs + 1);
        const payload = JSON.stringify({
          ts: new Date(logger.lastTs).toISOString(),
          readings: SENSORS.map((s) => ({ sensor: s, value: Math.round(Math.random() * 1000) / 10 })),
        });
        publisher.publish(logger.topic, payload, { qos: QOS });
      };
      /** Publishes `rate` messages/s for `seconds`, in 10 ms ticks, catching up on late ticks. */
      const publishAt = async (rate: number, seconds: number) => {
        const started = performance.now();
        let sent = 0;
        while (performance.now() - started < seconds * 1000) {
          const due = Math.floor(((performance.now() - started) / 1000) * rate);
          while (sent < due) {
            publishOne();
            sent++;
          }
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        return sent;
      };

      // Every device exists before anyone watches.
      for (let i = 0; i < dataloggers.length; i++) publishOne();
      await waitFor(
        '120 sensors',
        async () => (await sql<{ n: number }[]>`select count(*)::int as n from sensor`)[0]!.n,
        { accept: (n) => n === dataloggers.length * SENSORS.length, timeoutMs: 30_000 },
      );

      const anonKey = await signJwt(secret, { role: 'anon' });
      const token = await signJwt(secret, {
        sub: userId,
        role: 'authenticated',
        email: `${userId}@example.test`,
        app_metadata: { provider: 'email' },
      });
      const client = createClient(server.url, anonKey, {
        accessToken: () => Promise.resolve(token),
        auth: { persistSession: false },
      });
      await client.realtime.setAuth();
      const tally = new Tally();
      await subscribed(
        client
          .channel(`site:${site!.id}`, { config: { private: true } })
          .on('broadcast', { event: '*' }, (m: { event: string; payload: Record<string, unknown> }) =>
            tally.broadcast(m.event, m.payload),
          ),
      );
      await subscribed(
        client
          .channel('sites:connections')
          .on(
            'postgres_changes',
            { event: '*', schema: 'public', table: 'mqtt_connection' },
            () => tally.connectionChanges++,
          ),
      );
      await subscribed(
        client
          .channel('topics-and-logs')
          .on(
            'postgres_changes',
            { event: '*', schema: 'public', table: 'discovered_topic' },
            () => tally.topicLogChanges++,
          )
          .on(
            'postgres_changes',
            { event: '*', schema: 'public', table: 'mqtt_parsing_log' },
            () => tally.topicLogChanges++,
          ),
      );
      // Warm up until the site's broadcasts reach the subscriber (the feeds are live).
      await waitFor(
        'a site broadcast to arrive',
        () => {
          publishOne();
          return tally.broadcasts > 0;
        },
        { timeoutMs: 30_000, intervalMs: 100 },
      );

      console.log(
        `bench:site-realtime — one site, ${dataloggers.length * SENSORS.length} sensors, one member subscribed, ` +
          `BFG_REALTIME_MAX_RATE=${values['max-rate']} (ignored before issue 9), QoS ${QOS}, ${SECONDS} s per rate, on this machine\n`,
      );
      console.log(
        '| MQTT msg/s | broadcast msgs/s | postgres_changes mqtt_connection /s | postgres_changes topics+logs /s | values p50 | p95 | p99 | readings committed |',
      );
      console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
      for (const rate of RATES) {
        await new Promise((resolve) => setTimeout(resolve, 1_500));
        const [before] = await sql<{ n: number }[]>`select count(*)::int as n from sensor_reading`;
        tally.reset();
        const started = performance.now();
        const sent = await publishAt(rate, SECONDS);
        const seconds = (performance.now() - started) / 1000;
        const counts = {
          broadcasts: tally.broadcasts,
          connection: tally.connectionChanges,
          topicLog: tally.topicLogChanges,
        };
        const latencies = [...tally.latencies].sort((a, b) => a - b);
        const committed = await waitFor(
          'the readings committed',
          async () => (await sql<{ n: number }[]>`select count(*)::int as n from sensor_reading`)[0]!.n - before!.n,
          { accept: (n) => n >= sent * SENSORS.length, timeoutMs: 60_000, intervalMs: 250 },
        ).catch(() => NaN);
        const perS = (n: number) => (n / seconds).toFixed(1);
        console.log(
          `| ${rate} | ${perS(counts.broadcasts)} | ${perS(counts.connection)} | ${perS(counts.topicLog)} | ` +
            `${percentile(latencies, 50)} ms | ${percentile(latencies, 95)} ms | ${percentile(latencies, 99)} ms | ${committed}/${sent * SENSORS.length} |`,
        );
      }
      await client.removeAllChannels();
      await publisher.endAsync();
    } finally {
      await server.close();
    }
  } finally {
    if (ingestor && ingestor.exitCode === null) {
      ingestor.kill('SIGTERM');
      await new Promise((resolve) => ingestor!.once('exit', resolve));
    }
    await sql.end();
    await mosquitto.stop();
    await pg.stop();
    await dir.remove();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
