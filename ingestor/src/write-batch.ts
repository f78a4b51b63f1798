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
import { emptyReadingColumns, insertReadings, qualityCode, updateLatestValues } from './sql/write-readings.ts';

/** A cached sensor id no longer exists (deleted since it was cached); the batch is retried without the cache. */
export class StaleSensorCacheError extends Error {
  override name = 'StaleSensorCacheError';
}

/**
 * Sensor ids by datalogger id, then ident: data messages only need ids, not an upsert per
 * message. Nested rather than keyed by `<datalogger>/<ident>`, so a reading is resolved without
 * building a key string.
 */
export type SensorIdCache = Map<string, Map<string, string>>;

export interface BatchStats {
  messages: number;
  readings: number;
  inserted: number;
}

/** Archive rows per batch at most; a flood of unmatched traffic must not swamp the database. */
const ARCHIVE_LIMIT_PER_BATCH = 1_000;

/** Ascending by key, so that concurrent writers lock shared rows in the same order (no deadlock). */
const byKey = <T>(rows: Map<string, T>): T[] =>
  [...rows.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, row]) => row);

/** Ascending bigint ids given as decimal strings. */
const byId = (a: string, b: string) => a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);

/** The readings of one sensor in a batch: where each ts is in the columns, and the newest. */
interface SensorReadings {
  byTs: Map<string, number>;
  newest: number;
  newestMs: number;
}

/**
 * Writes everything a batch of messages turned into, in one transaction: entities first (merged
 * per device, so each row is touched once), then readings in bulk, the latest value per sensor,
 * the aggregated parsing errors and the archive of unmatched messages.
 */
export async function writeBatch(
  tx: TransactionSql,
  batch: readonly ProcessedMessage[],
  sensorIds: SensorIdCache,
): Promise<BatchStats> {
  const gateways = new Map<string, GatewayUpsert>();
  for (const m of batch) {
    for (const g of m.rows?.gateways ?? []) {
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
  }
  const gatewayIds = await upsertGateways(tx, byKey(gateways));

  const dataloggers = new Map<string, DataloggerUpsert>();
  for (const m of batch) {
    for (const d of m.rows?.dataloggers ?? []) {
      const gatewayId = gatewayIds.get(`${m.siteId}/${d.gatewayIdent}`);
      if (!gatewayId) throw new Error(`parser output names gateway "${d.gatewayIdent}" without listing it`);
      const key = `${gatewayId}/${d.ident}`;
      const row = dataloggers.get(key) ?? {
        siteId: m.siteId,
        gatewayId,
        ident: d.ident,
        lastSeenAt: m.receivedAt,
        model: null,
        serial: null,
        firmware: null,
        intervalS: null,
        infoAt: null,
      };
      if (m.receivedAt > row.lastSeenAt) row.lastSeenAt = m.receivedAt;
      if (d.infoAt !== undefined) {
        row.model = d.model ?? row.model;
        row.serial = d.serial ?? row.serial;
        row.firmware = d.firmware ?? row.firmware;
        row.intervalS = d.intervalS ?? row.intervalS;
        row.infoAt = d.infoAt;
      }
      dataloggers.set(key, row);
    }
  }
  const dataloggerIds = await upsertDataloggers(tx, byKey(dataloggers));
  // The rows of a message almost always name one datalogger: its id is looked up once per change.
  let lastSite: string | undefined;
  let lastGateway: string | undefined;
  let lastIdent: string | undefined;
  let lastId = '';
  const dataloggerId = (m: ProcessedMessage, gatewayIdent: string, ident: string) => {
    if (m.siteId === lastSite && gatewayIdent === lastGateway && ident === lastIdent) return lastId;
    const id = dataloggerIds.get(`${gatewayIds.get(`${m.siteId}/${gatewayIdent}`)}/${ident}`);
    if (!id) throw new Error(`parser output names datalogger "${ident}" without listing it`);
    lastSite = m.siteId;
    lastGateway = gatewayIdent;
    lastIdent = ident;
    lastId = id;
    return id;
  };

  // Sensors: upsert the ones not cached yet and the ones whose catalogue details arrived.
  const sensorsToUpsert = new Map<string, SensorUpsert>();
  for (const m of batch) {
    for (const s of m.rows?.sensors ?? []) {
      const dlId = dataloggerId(m, s.gatewayIdent, s.dataloggerIdent);
      const hasDetails = s.name != null || s.kind != null || s.unit != null;
      if (!hasDetails && sensorIds.get(dlId)?.has(s.ident)) continue;
      const key = `${dlId}/${s.ident}`;
      if (!hasDetails && sensorsToUpsert.has(key)) continue;
      const previous = sensorsToUpsert.get(key);
      sensorsToUpsert.set(key, {
        siteId: m.siteId,
        dataloggerId: dlId,
        ident: s.ident,
        name: s.name ?? previous?.name ?? null,
        kind: s.kind ?? previous?.kind ?? null,
        unit: s.unit ?? previous?.unit ?? null,
      });
    }
  }
  for (const row of await upsertSensors(tx, byKey(sensorsToUpsert))) {
    let ofDatalogger = sensorIds.get(row.dataloggerId);
    if (!ofDatalogger) {
      ofDatalogger = new Map<string, string>();
      sensorIds.set(row.dataloggerId, ofDatalogger);
    }
    ofDatalogger.set(row.ident, row.id);
  }

  // Readings: one per (sensor, ts) — the last delivered wins within a batch — as columns. The
  // readings of a message share one Date, so its ISO form is made once per message.
  const readings = emptyReadingColumns();
  const perSensor = new Map<string, SensorReadings>();
  let lastDate: Date | undefined;
  let lastIso = '';
  for (const m of batch) {
    const rows = m.rows?.readings;
    if (!rows) continue;
    for (const r of rows) {
      const sensorId = sensorIds.get(dataloggerId(m, r.gatewayIdent, r.dataloggerIdent))?.get(r.sensorIdent);
      if (!sensorId) throw new Error(`parser output names sensor "${r.sensorIdent}" without listing it`);
      if (r.ts !== lastDate) {
        lastDate = r.ts;
        lastIso = r.ts.toISOString();
      }
      const quality = qualityCode(r.quality);
      const ms = r.ts.getTime();
      let sensor = perSensor.get(sensorId);
      let at = sensor?.byTs.get(lastIso);
      if (at === undefined) {
        at = readings.sensorIds.push(sensorId) - 1;
        readings.ts.push(lastIso);
        readings.values.push(r.value);
        readings.qualities.push(quality);
        if (!sensor) perSensor.set(sensorId, (sensor = { byTs: new Map(), newest: at, newestMs: ms }));
        sensor.byTs.set(lastIso, at);
      } else {
        readings.values[at] = r.value;
        readings.qualities[at] = quality;
      }
      if (ms >= sensor!.newestMs) {
        sensor!.newest = at;
        sensor!.newestMs = ms;
      }
    }
  }
  const latest = emptyReadingColumns();
  for (const sensorId of [...perSensor.keys()].sort(byId)) {
    const at = perSensor.get(sensorId)!.newest;
    latest.sensorIds.push(sensorId);
    latest.ts.push(readings.ts[at]!);
    latest.values.push(readings.values[at]!);
    latest.qualities.push(readings.qualities[at]!);
  }
  const existing = await updateLatestValues(tx, latest);
  if (existing.size !== latest.sensorIds.length) throw new StaleSensorCacheError('a cached sensor id no longer exists');
  const inserted = await insertReadings(tx, readings);

  await upsertParsingLog(tx, aggregateFailures(batch));
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
  await insertArchive(tx, archive);
  return { messages: batch.length, readings: readings.sensorIds.length, inserted };
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
