import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { processMessage, type ProcessedMessage } from '../../ingestor/src/message-pipeline.ts';
import { defaultParserRegistry } from '../../ingestor/src/parsers/registry.ts';
import { TopicMatcher } from '../../ingestor/src/topic-matcher.ts';
import {
  LAST_SEEN_RESOLUTION_MS,
  StaleSensorCacheError,
  newSensorIdCache,
  writeBatch,
  type SensorIdCache,
} from '../../ingestor/src/write-batch.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { newConnection, newSite } from '../support/factories.ts';

/**
 * The write path on its own (writeBatch in a transaction, as the batch writer and the backfill call
 * it): readings go as a plain insert first and again with `on conflict do nothing` only when one is
 * already stored, so both ways are checked here — exactly once, with the rollups counting each
 * reading once — and so are the per-batch dedup (the last delivered wins) and the sensor-id cache.
 */

const PATTERN = '+site/gateway/+gateway/datalogger/+datalogger/data';
let db: TestDatabase;
let ctx: Parameters<typeof processMessage>[0];

beforeAll(async () => {
  db = await createTestDatabase();
  const site = await newSite(db.sql);
  const conn = await newConnection(db.sql, site.id);
  const [topic] = await db.sql<{ id: string }[]>`
    insert into mqtt_topic (connection_id, pattern, parser) values (${conn.id}, ${PATTERN}, 'bfg.datalogger-data.v1')
    returning id::text as id`;
  ctx = {
    connectionId: conn.id,
    siteId: site.id,
    siteSlug: site.slug,
    matcher: new TopicMatcher([
      { id: topic!.id, pattern: PATTERN, parser: 'bfg.datalogger-data.v1', parserConfig: {}, priority: 0 },
    ]),
  };
});

afterAll(async () => {
  await db?.drop();
});

const message = (datalogger: string, payload: unknown, receivedAt = new Date()): ProcessedMessage =>
  processMessage(
    ctx,
    {
      topic: `${ctx.siteSlug}/gateway/gw-1/datalogger/${datalogger}/data`,
      payload: Buffer.from(JSON.stringify(payload)),
      qos: 1,
      retained: false,
      receivedAt,
    },
    defaultParserRegistry,
    { maxPayloadBytes: 262_144, archiveUnmatched: false },
  );

const write = (batch: ProcessedMessage[], cache: SensorIdCache = newSensorIdCache()) =>
  db.sql.begin((tx) => writeBatch(tx, batch, cache));

async function stored(datalogger: string) {
  return db.sql<{ sensor: string; ts: string; value: number | null; quality: string | null }[]>`
    select s.ident as sensor, to_char(r.ts at time zone 'UTC', 'HH24:MI:SS') as ts, r.value, r.quality
    from sensor_reading r join sensor s on s.id = r.sensor_id join datalogger d on d.id = s.datalogger_id
    where d.ident = ${datalogger} and d.site_id = ${ctx.siteId}
    order by s.ident, r.ts`;
}

async function rollupCount(datalogger: string): Promise<number> {
  const [row] = await db.sql<{ n: number }[]>`
    select coalesce(sum(r.n), 0)::int as n
    from sensor_reading_rollup r join sensor s on s.id = r.sensor_id join datalogger d on d.id = s.datalogger_id
    where d.ident = ${datalogger} and d.site_id = ${ctx.siteId}`;
  return row!.n;
}

describe('writeBatch', () => {
  it('stores a batch with a reading already stored: the others once, the stored one unchanged, each counted once', async () => {
    await write([message('dl-a', { ts: '2026-11-26T10:00:00Z', readings: [{ sensor: 't', value: 1 }] })]);
    const stats = await write([
      message('dl-a', { ts: '2026-11-26T10:00:00Z', readings: [{ sensor: 't', value: 99 }] }),
      message('dl-a', {
        ts: '2026-11-26T10:00:01Z',
        readings: [
          { sensor: 't', value: 2 },
          { sensor: 'rh', value: null, quality: 'bad' },
        ],
      }),
    ]);
    expect(stats).toEqual({ messages: 2, readings: 3, inserted: 2 });
    expect(await stored('dl-a')).toEqual([
      { sensor: 'rh', ts: '10:00:01', value: null, quality: 'bad' },
      { sensor: 't', ts: '10:00:00', value: 1, quality: null },
      { sensor: 't', ts: '10:00:01', value: 2, quality: null },
    ]);
    // Rollups count readings with a value: t twice.
    expect(await rollupCount('dl-a')).toBe(2);
  });

  it('keeps the last delivered of one (sensor, ts) within a batch, and sets the newest as the latest value', async () => {
    const stats = await write([
      message('dl-b', { ts: '2026-11-26T10:00:02Z', readings: [{ sensor: 't', value: 5 }] }),
      message('dl-b', { ts: '2026-11-26T10:00:01Z', readings: [{ sensor: 't', value: 4 }] }),
      message('dl-b', { ts: '2026-11-26T10:00:02Z', values: { t: 6 } }),
    ]);
    expect(stats).toEqual({ messages: 3, readings: 2, inserted: 2 });
    expect(await stored('dl-b')).toEqual([
      { sensor: 't', ts: '10:00:01', value: 4, quality: null },
      { sensor: 't', ts: '10:00:02', value: 6, quality: null },
    ]);
    const [latest] = await db.sql<{ value: number; at: Date }[]>`
      select s.last_value as value, s.last_value_at as at from sensor s join datalogger d on d.id = s.datalogger_id
      where d.ident = 'dl-b' and d.site_id = ${ctx.siteId}`;
    expect(latest).toEqual({ value: 6, at: new Date('2026-11-26T10:00:02Z') });
  });

  it("moves a seen-again device's last_seen_at at most once per LAST_SEEN_RESOLUTION_MS, its readings and latest values every batch", async () => {
    const cache = newSensorIdCache();
    // Later than what the other tests wrote into the gateway they share (last_seen_at only grows).
    const t0 = Math.ceil(Date.now() / 1000) * 1000 + 60_000;
    const data = (seconds: number, value: number, receivedMs: number) =>
      message(
        'dl-seen',
        { ts: new Date(t0 + seconds * 1000).toISOString(), values: { t: value } },
        new Date(receivedMs),
      );
    const seen = async () => {
      const [row] = await db.sql<{ gateway: Date; datalogger: Date; value: number }[]>`
        select g.last_seen_at as gateway, d.last_seen_at as datalogger, s.last_value as value
        from datalogger d join gateway g on g.id = d.gateway_id join sensor s on s.datalogger_id = d.id
        where d.ident = 'dl-seen' and d.site_id = ${ctx.siteId}`;
      return { gateway: row!.gateway.getTime(), datalogger: row!.datalogger.getTime(), value: row!.value };
    };
    await write([data(0, 1, t0)], cache);
    expect(await seen()).toEqual({ gateway: t0, datalogger: t0, value: 1 });
    // Within the resolution: the reading and the latest value, not the devices' rows.
    const soon = t0 + LAST_SEEN_RESOLUTION_MS - 1;
    await write([data(1, 2, soon)], cache);
    expect(await seen()).toEqual({ gateway: t0, datalogger: t0, value: 2 });
    // Past it, measured from the last write: both rows move.
    const later = t0 + LAST_SEEN_RESOLUTION_MS;
    await write([data(2, 3, later)], cache);
    expect(await seen()).toEqual({ gateway: later, datalogger: later, value: 3 });
    expect((await stored('dl-seen')).map((r) => r.value)).toEqual([1, 2, 3]);
    // A device the staleness job (or an admin) set offline comes back with the next write of its row.
    await db.sql`update datalogger set presence = 'offline' where ident = 'dl-seen' and site_id = ${ctx.siteId}`;
    await write([data(3, 4, later + LAST_SEEN_RESOLUTION_MS)], cache);
    const [back] = await db.sql<{ presence: string }[]>`
      select presence from datalogger where ident = 'dl-seen' and site_id = ${ctx.siteId}`;
    expect(back!.presence).toBe('online');
  });

  it('caches device ids, writes known devices from the cache, and says so when a cached one was deleted', async () => {
    const cache = newSensorIdCache();
    await write([message('dl-c', { ts: '2026-11-26T10:00:00Z', values: { t: 1, rh: 2 } })], cache);
    expect([...cache.sensors.values()].map((sensors) => [...sensors.keys()].sort())).toEqual([['rh', 't']]);
    expect([...cache.dataloggers.keys()]).toEqual([`${ctx.siteId}/gw-1/dl-c`]);
    // All known: written from the cache (the statements sent together).
    await write([message('dl-c', { ts: '2026-11-26T10:00:00.500Z', values: { t: 1.5, rh: 2.5 } })], cache);
    await db.sql`delete from sensor where ident = 't' and datalogger_id in (select id from datalogger where ident = 'dl-c')`;
    await expect(
      write([message('dl-c', { ts: '2026-11-26T10:00:01Z', values: { t: 3, rh: 4 } })], cache),
    ).rejects.toBeInstanceOf(StaleSensorCacheError);
    // Without the cache the sensor is created again.
    await write([message('dl-c', { ts: '2026-11-26T10:00:01Z', values: { t: 3, rh: 4 } })]);
    expect(await stored('dl-c')).toEqual([
      { sensor: 'rh', ts: '10:00:00', value: 2, quality: null },
      { sensor: 'rh', ts: '10:00:00', value: 2.5, quality: null },
      { sensor: 'rh', ts: '10:00:01', value: 4, quality: null },
      { sensor: 't', ts: '10:00:01', value: 3, quality: null },
    ]);
  });

  it('says a cached gateway deleted meanwhile is stale, from the cache path too', async () => {
    const cache = newSensorIdCache();
    await write([message('dl-d', { ts: '2026-11-26T10:00:00Z', values: { t: 1 } })], cache);
    await db.sql`delete from gateway where site_id = ${ctx.siteId} and ident = 'gw-1'`;
    await expect(
      write([message('dl-d', { ts: '2026-11-26T10:00:01Z', values: { t: 2 } })], cache),
    ).rejects.toBeInstanceOf(StaleSensorCacheError);
    await write([message('dl-d', { ts: '2026-11-26T10:00:01Z', values: { t: 2 } })]);
    expect(await stored('dl-d')).toEqual([{ sensor: 't', ts: '10:00:01', value: 2, quality: null }]);
  });
});
