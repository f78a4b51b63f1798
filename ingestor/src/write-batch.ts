import type { TransactionSql } from 'postgres';
import type { ProcessedMessage } from './message-pipeline.ts';
import {
  upsertDataloggers,
  upsertGateways,
  upsertSensors,
  type DataloggerUpsert,
  type GatewayUpsert,
  type SensorUpsert,
} from './sql/upsert-devices.ts';
import {
  insertArchive,
  upsertParsingLog,
  type ArchiveInsert,
  type ParsingLogTopicCount,
  type ParsingLogUpsert,
} from './sql/write-logs.ts';
import {
  emptyReadingColumns,
  insertReadings,
  qualityCode,
  updateLatestValues,
  type ReadingColumns,
} from './sql/write-readings.ts';

/** A cached device id no longer exists (deleted since it was cached); the batch is retried without the cache. */
export class StaleSensorCacheError extends Error {
  override name = 'StaleSensorCacheError';
}

/**
 * Device ids the writer has seen, so that a batch of known devices sends its statements without
 * waiting for one's ids before the next (writePrepared). Sensors by datalogger id, then ident:
 * nested rather than keyed by `<datalogger>/<ident>`, so a reading is resolved without building a
 * key string.
 */
export interface SensorIdCache {
  /** By `<site>/<ident>` (PreparedBatch.gateways' keys). */
  gateways: Map<string, string>;
  /** By `<site>/<gateway ident>/<ident>` (PreparedBatch.dataloggers' keys). */
  dataloggers: Map<string, string>;
  sensors: Map<string, Map<string, string>>;
  /**
   * The `last_seen_at` (epoch ms) this writer last wrote for each gateway and datalogger, by the
   * keys above: see LAST_SEEN_RESOLUTION_MS.
   */
  gatewaysSeen: Map<string, number>;
  dataloggersSeen: Map<string, number>;
}

export const newSensorIdCache = (): SensorIdCache => ({
  gateways: new Map(),
  dataloggers: new Map(),
  sensors: new Map(),
  gatewaysSeen: new Map(),
  dataloggersSeen: new Map(),
});

/**
 * A batch that only says a cached gateway or datalogger was seen again (a data message: no status,
 * no info) leaves its row alone when this writer wrote a `last_seen_at` less than this much older.
 * At a batch every few tens of milliseconds, every batch updated every device's row only to move
 * `last_seen_at` — the row locks the next batch waits for, the change-outbox entries and the
 * broadcast of each — for a time nobody reads to the millisecond: a device goes offline after
 * 300 s (gateways) or 3 × its interval of at least 1 s (dataloggers), so one that went offline
 * always has an older write and is brought back online by its next message.
 */
export const LAST_SEEN_RESOLUTION_MS = 1_000;

/** Whether a seen-again row may skip its write (LAST_SEEN_RESOLUTION_MS). */
function seenRecently(seen: Map<string, number>, key: string, lastSeenAt: Date, carriesMore: boolean): boolean {
  if (carriesMore) return false;
  const written = seen.get(key);
  return written !== undefined && lastSeenAt.getTime() - written < LAST_SEEN_RESOLUTION_MS;
}

/** Remembers the last_seen_at of the rows the statements just upserted (greatest wins, as in SQL). */
function rememberSeen(seen: Map<string, number>, rows: Map<string, { lastSeenAt: Date }>): void {
  for (const [key, { lastSeenAt }] of rows) {
    const at = lastSeenAt.getTime();
    if (at > (seen.get(key) ?? -Infinity)) seen.set(key, at);
  }
}

export interface BatchStats {
  messages: number;
  readings: number;
  inserted: number;
}

/** SQLSTATE foreign_key_violation. */
const FOREIGN_KEY_VIOLATION = '23503';

/** Archive rows per batch at most; a flood of unmatched traffic must not swamp the database. */
const ARCHIVE_LIMIT_PER_BATCH = 1_000;

/** Ascending by key, so that concurrent writers lock shared rows in the same order (no deadlock). */
const byKey = <T>(rows: Map<string, T>): T[] =>
  [...rows.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, row]) => row);

/** Ascending bigint ids given as decimal strings. */
const byId = (a: string, b: string) => a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);

/**
 * The readings of one sensor in a batch: their places in the columns, and the newest. A sensor's
 * readings nearly always come in time order, each later than the one before, and then none can
 * repeat an earlier one; only a reading no later than the newest is looked for among them.
 */
interface SensorReadings {
  at: number[];
  newest: number;
  newestMs: number;
}

/** A sensor named by the batch: its catalogue details (last non-null of each), its readings. */
interface PreparedSensor {
  ident: string;
  /** Named in some message's `sensors` (a reading alone does not create its sensor). */
  listed: boolean;
  hasDetails: boolean;
  name: string | null;
  kind: string | null;
  unit: string | null;
  readings: SensorReadings | undefined;
}

interface PreparedDatalogger {
  gatewayKey: string;
  row: Omit<DataloggerUpsert, 'gatewayId'>;
  sensors: Map<string, PreparedSensor>;
}

/**
 * What a batch of messages turns into, merged per device, before any id is known: built by
 * `prepareBatch` outside the write transaction (so the next batch is prepared while the database
 * writes this one), written by `writePrepared`.
 */
export interface PreparedBatch {
  messages: number;
  /** By `<site>/<ident>`. */
  gateways: Map<string, GatewayUpsert>;
  /** By `<site>/<gateway ident>/<ident>`. */
  dataloggers: Map<string, PreparedDatalogger>;
  /** The readings' ts, value and quality; sensor ids are filled in by writePrepared. */
  readings: ReadingColumns;
  /** The aggregated parsing errors (also what the parsing log file gets). */
  failures: ParsingLogUpsert[];
  archive: ArchiveInsert[];
}

export function prepareBatch(batch: readonly ProcessedMessage[]): PreparedBatch {
  const gateways = new Map<string, GatewayUpsert>();
  const dataloggers = new Map<string, PreparedDatalogger>();
  for (const m of batch) {
    const rows = m.rows;
    if (!rows) continue;
    for (const g of rows.gateways) {
      const key = `${m.siteId}/${g.ident}`;
      const row = gateways.get(key) ?? {
        siteId: m.siteId,
        ident: g.ident,
        lastSeenAt: m.receivedAt,
        online: null,
        firmware: null,
        uptimeS: null,
        rssiDbm: null,
        statusAt: null,
      };
      if (m.receivedAt > row.lastSeenAt) row.lastSeenAt = m.receivedAt;
      if (g.online !== undefined && (!row.statusAt || (g.statusAt ?? m.receivedAt) >= row.statusAt)) {
        row.online = g.online;
        row.statusAt = g.statusAt ?? m.receivedAt;
        row.firmware = g.firmware ?? row.firmware;
        row.uptimeS = g.uptimeS ?? row.uptimeS;
        row.rssiDbm = g.rssiDbm ?? row.rssiDbm;
      }
      gateways.set(key, row);
    }
    for (const d of rows.dataloggers) {
      const gatewayKey = `${m.siteId}/${d.gatewayIdent}`;
      if (!gateways.has(gatewayKey))
        throw new Error(`parser output names gateway "${d.gatewayIdent}" without listing it`);
      const key = `${gatewayKey}/${d.ident}`;
      let entry = dataloggers.get(key);
      if (!entry) {
        entry = {
          gatewayKey,
          row: {
            siteId: m.siteId,
            ident: d.ident,
            lastSeenAt: m.receivedAt,
            model: null,
            serial: null,
            firmware: null,
            intervalS: null,
            infoAt: null,
          },
          sensors: new Map(),
        };
        dataloggers.set(key, entry);
      }
      const row = entry.row;
      if (m.receivedAt > row.lastSeenAt) row.lastSeenAt = m.receivedAt;
      if (d.infoAt !== undefined) {
        row.model = d.model ?? row.model;
        row.serial = d.serial ?? row.serial;
        row.firmware = d.firmware ?? row.firmware;
        row.intervalS = d.intervalS ?? row.intervalS;
        row.infoAt = d.infoAt;
      }
    }
  }

  // The rows of a message almost always name one datalogger: it is looked up once per change.
  let lastSite: string | undefined;
  let lastGateway: string | undefined;
  let lastIdent: string | undefined;
  let lastSensors = new Map<string, PreparedSensor>();
  const sensorsOf = (m: ProcessedMessage, gatewayIdent: string, ident: string) => {
    if (m.siteId === lastSite && gatewayIdent === lastGateway && ident === lastIdent) return lastSensors;
    const entry = dataloggers.get(`${m.siteId}/${gatewayIdent}/${ident}`);
    if (!entry) throw new Error(`parser output names datalogger "${ident}" without listing it`);
    lastSite = m.siteId;
    lastGateway = gatewayIdent;
    lastIdent = ident;
    lastSensors = entry.sensors;
    return lastSensors;
  };
  const sensor = (sensors: Map<string, PreparedSensor>, ident: string) => {
    let entry = sensors.get(ident);
    if (!entry) {
      entry = { ident, listed: false, hasDetails: false, name: null, kind: null, unit: null, readings: undefined };
      sensors.set(ident, entry);
    }
    return entry;
  };

  // Readings: one per (sensor, ts) — the last delivered wins within a batch — as columns.
  const readings = emptyReadingColumns();
  for (const m of batch) {
    const rows = m.rows;
    if (!rows) continue;
    for (const s of rows.sensors) {
      const entry = sensor(sensorsOf(m, s.gatewayIdent, s.dataloggerIdent), s.ident);
      entry.listed = true;
      if (s.name != null || s.kind != null || s.unit != null) entry.hasDetails = true;
      entry.name = s.name ?? entry.name;
      entry.kind = s.kind ?? entry.kind;
      entry.unit = s.unit ?? entry.unit;
    }
    for (const r of rows.readings) {
      const entry = sensor(sensorsOf(m, r.gatewayIdent, r.dataloggerIdent), r.sensorIdent);
      const quality = qualityCode(r.quality);
      const ms = r.ts.getTime();
      const own = entry.readings;
      let at = own && ms <= own.newestMs ? own.at.find((i) => readings.ts[i] === ms) : undefined;
      if (at === undefined) {
        at = readings.ts.push(ms) - 1;
        readings.values.push(r.value ?? NaN);
        readings.qualities.push(quality);
        if (own) own.at.push(at);
        else entry.readings = { at: [at], newest: at, newestMs: ms };
      } else {
        readings.values[at] = r.value ?? NaN;
        readings.qualities[at] = quality;
      }
      const mine = entry.readings!;
      if (ms >= mine.newestMs) {
        mine.newest = at;
        mine.newestMs = ms;
      }
    }
  }

  const archive: ArchiveInsert[] = [];
  for (const m of batch) {
    if (m.archivePayload && archive.length < ARCHIVE_LIMIT_PER_BATCH) {
      archive.push({
        connectionId: m.connectionId,
        topic: m.topic,
        payload: m.archivePayload,
        qos: m.qos,
        retained: m.retained,
        receivedAt: m.receivedAt,
      });
    }
  }
  return {
    messages: batch.length,
    gateways,
    dataloggers,
    readings,
    failures: aggregateFailures(batch),
    archive,
  };
}

/**
 * Writes everything a batch of messages turned into, in one transaction: entities first (merged
 * per device, so each row is touched once), then readings in bulk, the latest value per sensor,
 * the aggregated parsing errors and the archive of unmatched messages.
 */
export function writeBatch(
  tx: TransactionSql,
  batch: readonly ProcessedMessage[],
  sensorIds: SensorIdCache,
): Promise<BatchStats> {
  return writePrepared(tx, prepareBatch(batch), sensorIds);
}

/**
 * writeBatch's statements, for a batch prepared beforehand. Devices first, in key order (so that
 * concurrent writers lock shared rows in one order), then the latest values, the readings, the
 * logs. When every device is cached, the statements that do not depend on each other's results go
 * out together (one round trip instead of one each); the ids the upserts return are checked
 * against the cache, and a stale one retries the batch without it.
 */
export async function writePrepared(
  tx: TransactionSql,
  batch: PreparedBatch,
  cache: SensorIdCache,
): Promise<BatchStats> {
  const known = fromCache(batch, cache);
  if (known) return writeKnown(tx, batch, cache, known);

  const gatewayIds = await upsertGateways(tx, byKey(batch.gateways));
  const dataloggerRows = new Map<string, DataloggerUpsert>();
  for (const [key, d] of batch.dataloggers)
    dataloggerRows.set(key, { ...d.row, gatewayId: gatewayIds.get(d.gatewayKey)! });
  const dataloggerIds = await upsertDataloggers(tx, byKey(dataloggerRows));

  // Sensors: upsert the ones not cached yet and the ones whose catalogue details arrived.
  const sensorsToUpsert = new Map<string, SensorUpsert>();
  const resolved: { dataloggerId: string; sensor: PreparedSensor }[] = [];
  const dataloggerIdOf = new Map<string, string>();
  for (const [key, d] of batch.dataloggers) {
    const dataloggerId = dataloggerIds.get(`${dataloggerRows.get(key)!.gatewayId}/${d.row.ident}`)!;
    dataloggerIdOf.set(key, dataloggerId);
    const cached = cache.sensors.get(dataloggerId);
    for (const s of d.sensors.values()) {
      if (s.readings) resolved.push({ dataloggerId, sensor: s });
      if (!s.listed || (!s.hasDetails && cached?.has(s.ident))) continue;
      sensorsToUpsert.set(`${dataloggerId}/${s.ident}`, {
        siteId: d.row.siteId,
        dataloggerId,
        ident: s.ident,
        name: s.name,
        kind: s.kind,
        unit: s.unit,
      });
    }
  }
  for (const row of await upsertSensors(tx, byKey(sensorsToUpsert))) {
    let ofDatalogger = cache.sensors.get(row.dataloggerId);
    if (!ofDatalogger) {
      ofDatalogger = new Map<string, string>();
      cache.sensors.set(row.dataloggerId, ofDatalogger);
    }
    ofDatalogger.set(row.ident, row.id);
  }

  // Each sensor's id into its readings' places in the columns, and its newest reading.
  const readings = batch.readings;
  readings.sensorIds = new Array<string>(readings.ts.length);
  const latest: Latest[] = [];
  for (const { dataloggerId, sensor } of resolved) {
    const sensorId = cache.sensors.get(dataloggerId)?.get(sensor.ident);
    if (!sensorId) throw new Error(`parser output names sensor "${sensor.ident}" without listing it`);
    for (const at of sensor.readings!.at) readings.sensorIds[at] = sensorId;
    latest.push({ sensorId, at: sensor.readings!.newest });
  }
  const newest = newestColumns(readings, latest);
  const existing = await updateLatestValues(tx, newest);
  if (existing.size !== newest.sensorIds.length) throw new StaleSensorCacheError('a cached sensor id no longer exists');
  const inserted = await insertReadings(tx, readings);

  await upsertParsingLog(tx, batch.failures);
  await insertArchive(tx, batch.archive);
  // Cached once written (a rolled-back batch's ids are dropped with the whole cache: batch-writer.ts).
  for (const [key, id] of gatewayIds) cache.gateways.set(key, id);
  for (const [key, id] of dataloggerIdOf) cache.dataloggers.set(key, id);
  rememberSeen(cache.gatewaysSeen, batch.gateways);
  rememberSeen(cache.dataloggersSeen, dataloggerRows);
  return { messages: batch.messages, readings: readings.ts.length, inserted };
}

interface Latest {
  sensorId: string;
  /** Its newest reading's place in the columns. */
  at: number;
}

/** The newest reading of each sensor, in ascending sensor id order (the order rows are locked in). */
function newestColumns(readings: ReadingColumns, latest: Latest[]): ReadingColumns {
  latest.sort((a, b) => byId(a.sensorId, b.sensorId));
  const newest = emptyReadingColumns();
  for (const { sensorId, at } of latest) {
    newest.sensorIds.push(sensorId);
    newest.ts.push(readings.ts[at]!);
    newest.values.push(readings.values[at]!);
    newest.qualities.push(readings.qualities[at]!);
  }
  return newest;
}

/**
 * The batch's readings resolved from the cache alone, or undefined when a device is not cached or
 * a sensor brings catalogue details (which need its upsert).
 */
function fromCache(batch: PreparedBatch, cache: SensorIdCache): Latest[] | undefined {
  for (const key of batch.gateways.keys()) if (!cache.gateways.has(key)) return undefined;
  const latest: Latest[] = [];
  const ids = new Array<string>(batch.readings.ts.length);
  for (const [key, d] of batch.dataloggers) {
    const dataloggerId = cache.dataloggers.get(key);
    if (dataloggerId === undefined) return undefined;
    const sensors = cache.sensors.get(dataloggerId);
    for (const s of d.sensors.values()) {
      if (s.listed && s.hasDetails) return undefined;
      const sensorId = sensors?.get(s.ident);
      if (sensorId === undefined) return undefined;
      if (!s.readings) continue;
      for (const at of s.readings.at) ids[at] = sensorId;
      latest.push({ sensorId, at: s.readings.newest });
    }
  }
  batch.readings.sensorIds = ids;
  return latest;
}

async function writeKnown(
  tx: TransactionSql,
  batch: PreparedBatch,
  cache: SensorIdCache,
  latest: Latest[],
): Promise<BatchStats> {
  // Only the devices with something to write (LAST_SEEN_RESOLUTION_MS).
  const gatewayRows = new Map<string, GatewayUpsert>();
  for (const [key, g] of batch.gateways)
    if (!seenRecently(cache.gatewaysSeen, key, g.lastSeenAt, g.statusAt !== null)) gatewayRows.set(key, g);
  const dataloggerRows = new Map<string, DataloggerUpsert>();
  for (const [key, d] of batch.dataloggers)
    if (!seenRecently(cache.dataloggersSeen, key, d.row.lastSeenAt, d.row.infoAt !== null))
      dataloggerRows.set(key, { ...d.row, gatewayId: cache.gateways.get(d.gatewayKey)! });
  const newest = newestColumns(batch.readings, latest);
  // Sent together, executed in this order: the lock order of the other path. A cached gateway
  // deleted meanwhile fails the datalogger's foreign key: stale too; with both rows skipped, its
  // sensors (deleted with it) are missing from the latest values' update.
  const [gatewayIds, dataloggerIds, existing] = await Promise.all([
    upsertGateways(tx, byKey(gatewayRows)),
    upsertDataloggers(tx, byKey(dataloggerRows)),
    updateLatestValues(tx, newest),
  ]).catch((err: unknown) => {
    if ((err as { code?: unknown }).code === FOREIGN_KEY_VIOLATION) throw new StaleSensorCacheError('a cached gateway');
    throw err;
  });
  for (const [key, id] of gatewayIds)
    if (cache.gateways.get(key) !== id) throw new StaleSensorCacheError(`gateway ${key}`);
  for (const [key, d] of dataloggerRows)
    if (dataloggerIds.get(`${d.gatewayId}/${d.ident}`) !== cache.dataloggers.get(key))
      throw new StaleSensorCacheError(`datalogger ${key}`);
  if (existing.size !== newest.sensorIds.length) throw new StaleSensorCacheError('a cached sensor id no longer exists');
  const inserted = await insertReadings(tx, batch.readings);
  await Promise.all([upsertParsingLog(tx, batch.failures), insertArchive(tx, batch.archive)]);
  rememberSeen(cache.gatewaysSeen, gatewayRows);
  rememberSeen(cache.dataloggersSeen, dataloggerRows);
  return { messages: batch.messages, readings: batch.readings.ts.length, inserted };
}

/** Identical errors of a batch become one row with a count, and with the count per topic. */
export function aggregateFailures(batch: readonly ProcessedMessage[]): ParsingLogUpsert[] {
  const rows = new Map<string, { row: ParsingLogUpsert; topics: Map<string, ParsingLogTopicCount> }>();
  for (const m of batch) {
    const f = m.failure;
    if (!f) continue;
    const key = `${m.connectionId}/${f.fingerprint}`;
    let entry = rows.get(key);
    if (entry) {
      entry.row.count += 1;
      entry.row.lastSeenAt = m.receivedAt;
      entry.row.topic = m.topic;
      entry.row.payloadExcerpt = m.excerpt;
    } else {
      entry = {
        row: {
          connectionId: m.connectionId,
          fingerprint: f.fingerprint,
          topic: m.topic,
          parser: f.parser,
          kind: f.kind,
          message: f.message,
          issuePaths: f.issuePaths,
          payloadExcerpt: m.excerpt,
          count: 1,
          firstSeenAt: m.receivedAt,
          lastSeenAt: m.receivedAt,
          topics: [],
        },
        topics: new Map(),
      };
      rows.set(key, entry);
    }
    const topic = entry.topics.get(m.topic);
    if (topic) {
      topic.count += 1;
      topic.lastSeenAt = m.receivedAt;
    } else {
      entry.topics.set(m.topic, { topic: m.topic, count: 1, firstSeenAt: m.receivedAt, lastSeenAt: m.receivedAt });
    }
  }
  return [...rows.values()].map(({ row, topics }) => ({ ...row, topics: [...topics.values()] }));
}
