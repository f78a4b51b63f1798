import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadReadings } from '../../web/src/lib/server/queries/readings.ts';
import { asClaims, newUser, userClaims } from '../support/claims.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { addMember, newDeviceTree, newSite } from '../support/factories.ts';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db.drop();
});

describe('five-minute reading rollups (long-range charts)', () => {
  it('counts every inserted reading once — redelivered readings and null values add nothing', async () => {
    const site = await newSite(db.sql);
    const { sensorId } = await newDeviceTree(db.sql, site.id);
    const insert = () => db.sql`
      insert into sensor_reading (sensor_id, ts, value)
      select ${sensorId}, timestamptz '2026-11-01 10:00:00+00' + make_interval(secs => s * 10), case when s = 7 then null else s end
      from generate_series(0, 59) s
      on conflict do nothing`;
    await insert();
    await insert(); // the same readings again, as after a broker redelivery
    const rollups = await db.sql<{ bucket: Date; n: number; sum: number; min: number; max: number }[]>`
      select bucket, n, sum, min, max from sensor_reading_rollup
      where sensor_id = ${sensorId} and bucket >= '2026-11-01' and bucket < '2026-11-02' order by bucket`;
    // 60 readings 10 s apart from 10:00 fill two five-minute buckets; reading 7 has no value.
    expect(rollups.map((r) => [r.bucket.toISOString(), r.n, r.sum, r.min, r.max])).toEqual([
      ['2026-11-01T10:00:00.000Z', 29, 435 - 7, 0, 29],
      ['2026-11-01T10:05:00.000Z', 30, 1335, 30, 59],
    ]);
    await db.sql`delete from sensor where id = ${sensorId}`;
    expect(await db.sql`select 1 from sensor_reading_rollup where sensor_id = ${sensorId}`).toHaveLength(0);
  });

  it('serves long chart ranges from the rollups and short ones from the readings, as a member sees them', async () => {
    const site = await newSite(db.sql);
    const { sensorId } = await newDeviceTree(db.sql, site.id);
    await db.sql`
      insert into sensor_reading (sensor_id, ts, value)
      select ${sensorId}, now() - make_interval(secs => s * 60), 21.5
      from generate_series(1, 60 * 24 * 10) s`;
    const member = await newUser(db.sql);
    await addMember(db.sql, site.id, member);
    const claims = userClaims(member);
    const now = new Date();
    const day = await asClaims(db.sql, claims, (tx) =>
      loadReadings(tx, Number(sensorId), new Date(now.getTime() - 86_400_000), now),
    );
    expect(day.bucketS).toBeLessThan(300);
    expect(day.t.length).toBe(1440);
    const month = await asClaims(db.sql, claims, (tx) =>
      loadReadings(tx, Number(sensorId), new Date(now.getTime() - 30 * 86_400_000), now),
    );
    expect(month.bucketS % 300).toBe(0);
    expect(month.t.length).toBeGreaterThan(0);
    expect(month.t.length).toBeLessThanOrEqual(1500);
    // Every reading is 21.5, the value newDeviceTree stores too.
    expect(new Set(month.avg)).toEqual(new Set([21.5]));
  });
});
