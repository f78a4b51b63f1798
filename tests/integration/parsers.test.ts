import { describe, expect, it } from 'vitest';
import {
  builtInParsers,
  createParserRegistry,
  defaultParserRegistry,
  genericJsonConfigSchema,
  guarded,
  type ParseContext,
  type ParseResult,
  type Parser,
  type TopicParams,
} from '../../ingestor/src/parsers/index.ts';

/**
 * The payload parsers against PAYLOADS.md: every format, every bad-input row that is a parser
 * concern. Pure functions: no database, no broker (this file sits in the integration project
 * only because that is where the suites run).
 */

const receivedAt = new Date('2026-11-26T10:15:30Z');
const HOUR = 3_600_000;
const DEVICES = { site: 'demo', gateway: 'gw-1', datalogger: 'dl-1' };

const parser = (key: string): Parser => defaultParserRegistry.get(key)!;
const status = parser('bfg.gateway-status.v1');
const info = parser('bfg.datalogger-info.v1');
const data = parser('bfg.datalogger-data.v1');
const generic = parser('generic-json');

function run(p: Parser, json: unknown, params: TopicParams = DEVICES, parserConfig: unknown = {}): ParseResult {
  const ctx: ParseContext = { topic: 'demo/…', params, receivedAt, siteSlug: 'demo', parserConfig };
  return p.parse(json, ctx);
}
function rows(result: ParseResult) {
  if (!result.ok) throw new Error(`expected rows, got ${result.kind}: ${result.message}`);
  return result.rows;
}
/** kind and issue paths of a failure (the message is checked where it matters). */
function failure(result: ParseResult) {
  if (result.ok) throw new Error('expected a failure');
  return { kind: result.kind, paths: result.issuePaths };
}
const reading = (sensorIdent: string, value: number | null, ts: Date, quality: string | null = null) => ({
  gatewayIdent: 'gw-1',
  dataloggerIdent: 'dl-1',
  sensorIdent,
  ts,
  value,
  quality,
});

describe('parser registry', () => {
  it('holds the built-in parsers by key and rejects duplicate keys', () => {
    expect(defaultParserRegistry.keys()).toEqual([
      'bfg.datalogger-data.v1',
      'bfg.datalogger-info.v1',
      'bfg.gateway-status.v1',
      'generic-json',
    ]);
    expect(defaultParserRegistry.get('nope')).toBeUndefined();
    expect(() => createParserRegistry([...builtInParsers, status])).toThrow(
      /duplicate parser key "bfg.gateway-status.v1"/,
    );
    expect(status.configSchema.safeParse({}).success).toBe(true);
    expect(status.configSchema.safeParse({ typo: 1 }).success).toBe(false);
  });
});

describe('bfg.gateway-status.v1', () => {
  it('reads a full status', () => {
    const r = rows(
      run(
        status,
        { online: true, ts: '2026-11-26T10:15:00Z', firmware: '2.4.1', uptime_s: 86400, rssi_dbm: -67 },
        { site: 'demo', gateway: 'gw-1' },
      ),
    );
    expect(r).toEqual({
      gateways: [
        {
          ident: 'gw-1',
          online: true,
          firmware: '2.4.1',
          uptimeS: 86400,
          rssiDbm: -67,
          statusAt: new Date('2026-11-26T10:15:00Z'),
        },
      ],
      dataloggers: [],
      sensors: [],
      readings: [],
    });
  });
  it('dates the LWT (no ts) at the receive time', () => {
    const [gateway] = rows(run(status, { online: false }, { gateway: 'gw-1' })).gateways;
    expect(gateway).toMatchObject({ ident: 'gw-1', online: false, statusAt: receivedAt });
    expect(gateway!.firmware).toBeUndefined();
  });
  it('requires online and checks types', () => {
    expect(failure(run(status, { ts: 1764152100 }))).toEqual({ kind: 'schema', paths: ['online'] });
    expect(failure(run(status, { online: 'yes', uptime_s: -1, rssi_dbm: 'x' }))).toEqual({
      kind: 'schema',
      paths: ['online', 'uptime_s', 'rssi_dbm'],
    });
  });
});

describe('bfg.datalogger-info.v1', () => {
  const payload = {
    model: 'DL-400',
    serial: 'DL4-00123',
    firmware: '1.9.0',
    interval_s: 60,
    sensors: [
      { id: 't_air', name: 'Air temperature', kind: 'temperature', unit: '°C' },
      { id: 'rh', kind: 'humidity', unit: '%' },
      { id: 'p_atm' },
    ],
  };
  it('produces the gateway, the described datalogger and its sensors', () => {
    const r = rows(run(info, payload));
    expect(r.gateways).toEqual([{ ident: 'gw-1' }]);
    expect(r.dataloggers).toEqual([
      {
        gatewayIdent: 'gw-1',
        ident: 'dl-1',
        model: 'DL-400',
        serial: 'DL4-00123',
        firmware: '1.9.0',
        intervalS: 60,
        infoAt: receivedAt,
      },
    ]);
    expect(r.sensors).toEqual([
      {
        gatewayIdent: 'gw-1',
        dataloggerIdent: 'dl-1',
        ident: 't_air',
        name: 'Air temperature',
        kind: 'temperature',
        unit: '°C',
      },
      { gatewayIdent: 'gw-1', dataloggerIdent: 'dl-1', ident: 'rh', name: undefined, kind: 'humidity', unit: '%' },
      {
        gatewayIdent: 'gw-1',
        dataloggerIdent: 'dl-1',
        ident: 'p_atm',
        name: undefined,
        kind: undefined,
        unit: undefined,
      },
    ]);
    expect(r.readings).toEqual([]);
    expect(rows(run(info, {})).dataloggers[0]).toMatchObject({ ident: 'dl-1', infoAt: receivedAt });
  });
  it('rejects bad fields, keeps the last description of a repeated sensor, bounds the catalogue', () => {
    expect(failure(run(info, { interval_s: 0, sensors: [{ name: 'x' }, { id: 'bad id' }] }))).toEqual({
      kind: 'schema',
      paths: ['interval_s', 'sensors.0.id', 'sensors.1.id'],
    });
    expect(failure(run(info, { interval_s: 1.5 })).paths).toEqual(['interval_s']);
    expect(
      rows(
        run(info, {
          sensors: [
            { id: 'a', unit: 'K' },
            { id: 'a', unit: '°C' },
          ],
        }),
      ).sensors,
    ).toMatchObject([{ ident: 'a', unit: '°C' }]);
    expect(failure(run(info, { sensors: Array.from({ length: 1001 }, (_, i) => ({ id: `s${i}` })) })).kind).toBe(
      'too_large',
    );
  });
});

describe('bfg.datalogger-data.v1', () => {
  const ts = new Date('2026-11-26T10:15:00Z');
  it('reads the canonical form', () => {
    const r = rows(
      run(data, {
        ts: '2026-11-26T10:15:00Z',
        seq: 48213,
        readings: [
          { sensor: 't_air', value: 21.4 },
          { sensor: 'rh', value: null, quality: 'bad' },
        ],
      }),
    );
    expect(r.gateways).toEqual([{ ident: 'gw-1' }]);
    expect(r.dataloggers).toEqual([{ gatewayIdent: 'gw-1', ident: 'dl-1' }]);
    expect(r.sensors).toEqual([
      { gatewayIdent: 'gw-1', dataloggerIdent: 'dl-1', ident: 't_air' },
      { gatewayIdent: 'gw-1', dataloggerIdent: 'dl-1', ident: 'rh' },
    ]);
    expect(r.readings).toEqual([reading('t_air', 21.4, ts), reading('rh', null, ts, 'bad')]);
  });
  it('reads the compact form', () => {
    const r = rows(run(data, { ts: ts.getTime() / 1000, values: { t_air: 21.4, rh: 55.2 } }));
    expect(r.readings).toEqual([reading('t_air', 21.4, ts), reading('rh', 55.2, ts)]);
    expect(r.sensors.map((s) => s.ident)).toEqual(['t_air', 'rh']);
  });
  it('tells epoch seconds from milliseconds and takes ISO offsets into account', () => {
    const tsOf = (raw: unknown) => rows(run(data, { ts: raw, values: { a: 1 } })).readings[0]!.ts.toISOString();
    expect(tsOf(1764152100)).toBe('2025-11-26T10:15:00.000Z');
    expect(tsOf(1764152100123)).toBe('2025-11-26T10:15:00.123Z');
    expect(tsOf(1764152100.5)).toBe('2025-11-26T10:15:00.500Z');
    expect(tsOf('2026-11-26T12:15:00+02:00')).toBe('2026-11-26T10:15:00.000Z');
    expect(tsOf(new Date(receivedAt.getTime() + 23 * HOUR).toISOString())).toBe('2026-11-27T09:15:30.000Z');
  });
  it('stores a sensor repeated in one message once, the last reading winning', () => {
    const r = rows(
      run(data, {
        ts: ts.toISOString(),
        readings: [
          { sensor: 'a', value: 1 },
          { sensor: 'b', value: 2 },
          { sensor: 'a', value: 3, quality: 'suspect' },
        ],
      }),
    );
    expect(r.readings).toEqual([reading('a', 3, ts, 'suspect'), reading('b', 2, ts)]);
    expect(r.sensors.map((s) => s.ident)).toEqual(['a', 'b']);
  });

  const now = receivedAt.toISOString();
  it.each([
    ['[]', [], ['(root)']],
    ['42', 42, ['(root)']],
    ['"x"', 'x', ['(root)']],
    ['null', null, ['(root)']],
    ['missing ts', { readings: [{ sensor: 't_air', value: 1 }] }, ['ts']],
    ['missing readings', { ts: now }, ['readings']],
    ['readings not an array', { ts: 1, readings: 'nope' }, ['ts', 'readings']],
    ['numeric string value', { ts: now, readings: [{ sensor: 't_air', value: '21.4' }] }, ['readings.0.value']],
    ['"NaN" string', { ts: now, values: { t_air: 'NaN' } }, ['values.t_air']],
    ['missing value', { ts: now, readings: [{ sensor: 't_air' }] }, ['readings.0.value']],
    [
      'unknown quality',
      { ts: now, readings: [{ sensor: 't_air', value: 1, quality: 'great' }] },
      ['readings.0.quality'],
    ],
    [
      'bad sensor ids',
      {
        ts: now,
        readings: [
          { sensor: 'bad id', value: 1 },
          { sensor: 'x'.repeat(65), value: 1 },
        ],
      },
      ['readings.0.sensor', 'readings.1.sensor'],
    ],
    ['bad compact key', { ts: now, values: { 'bad/id': 1 } }, ['values.bad/id']],
    ['both forms', { ts: now, readings: [], values: {} }, ['readings', 'values']],
    ['ts as a string epoch', { ts: '1764152100', values: { a: 1 } }, ['ts']],
    ['ISO without offset', { ts: '2026-11-26T10:15:00', values: { a: 1 } }, ['ts']],
    ['impossible date', { ts: '2026-02-30T10:15:00Z', values: { a: 1 } }, ['ts']],
    ['ts > 24 h ahead', { ts: new Date(receivedAt.getTime() + 25 * HOUR).toISOString(), values: { a: 1 } }, ['ts']],
    ['ts far beyond Date', { ts: 1e300, values: { a: 1 } }, ['ts']],
    ['ts before 2000', { ts: '1999-12-31T23:59:59Z', values: { a: 1 } }, ['ts']],
    ['ts negative epoch', { ts: -5, values: { a: 1 } }, ['ts']],
  ])('rejects %s as schema, with the issue paths', (_name, json, paths) => {
    expect(failure(run(data, json))).toEqual({ kind: 'schema', paths });
  });

  it('keeps payload values out of the message, so identical errors aggregate', () => {
    const result = run(data, { ts: now, readings: [{ sensor: 't_air', value: '987.654' }] });
    expect(result).toMatchObject({ ok: false, message: expect.stringMatching(/^readings\.0\.value: /) as unknown });
    expect(JSON.stringify(result)).not.toContain('987.654');
  });

  it.each([
    ['a bad gateway segment', { ...DEVICES, gateway: 'bad id!' }, /gateway segment/],
    ['a bad datalogger segment', { ...DEVICES, datalogger: 'x'.repeat(65) }, /datalogger segment/],
    ['a multi-segment capture', { ...DEVICES, datalogger: ['a', 'b'] }, /one topic segment/],
    ['a missing wildcard', { site: 'demo', gateway: 'gw-1' }, /no \+datalogger wildcard/],
    ["another site's segment", { ...DEVICES, site: 'not-demo' }, /site segment differs/],
  ])('does not parse a topic with %s (invalid_topic)', (_name, params: TopicParams, message) => {
    const result = run(data, { ts: now, values: { a: 1 } }, params);
    expect(result).toMatchObject({
      ok: false,
      kind: 'invalid_topic',
      issuePaths: [],
      message: expect.stringMatching(message) as unknown,
    });
  });

  it('accepts 1,000 readings and rejects 1,001 as too_large', () => {
    const many = (n: number) => Array.from({ length: n }, (_, i) => ({ sensor: `s${i}`, value: i }));
    expect(rows(run(data, { ts: now, readings: many(1000) })).readings).toHaveLength(1000);
    expect(failure(run(data, { ts: now, readings: many(1001) }))).toEqual({ kind: 'too_large', paths: [] });
    expect(
      failure(run(data, { ts: now, values: Object.fromEntries(many(1001).map((r) => [r.sensor, r.value])) })).kind,
    ).toBe('too_large');
  });

  it('rejects a 1,000,000-element readings array quickly, without walking it', () => {
    const huge = { ts: now, readings: Array.from({ length: 1_000_000 }, () => ({ sensor: 'a', value: '1' })) };
    const started = performance.now();
    const result = run(data, huge);
    const elapsed = performance.now() - started;
    expect(failure(result).kind).toBe('too_large');
    expect(elapsed).toBeLessThan(200);
  });
});

describe('generic-json', () => {
  const config = {
    gateway: { param: 'device' },
    datalogger: { path: 'meta.logger' },
    timestamp: { path: 'time' },
    values: [
      { sensor: 't_air', path: 'data.temp', unit: '°C', kind: 'temperature' },
      { sensor: 'first', path: 'items.0.v' },
    ],
  };
  const params = { device: 'dev-7' };
  const payload = { time: 1764152100000, meta: { logger: 42 }, data: { temp: 21.5 }, items: [{ v: null }] };
  const ts = new Date(1764152100000);

  it('validates parser_config with configSchema', () => {
    expect(genericJsonConfigSchema.safeParse(config).success).toBe(true);
    expect(
      genericJsonConfigSchema.safeParse({ gateway: { value: 'gw' }, datalogger: { value: 'dl' }, values: { path: '' } })
        .success,
    ).toBe(true);
    for (const bad of [
      {},
      { ...config, values: undefined },
      { ...config, extra: true },
      { ...config, gateway: { param: 'device', path: 'x' } },
      { ...config, datalogger: { value: 'bad id' } },
      { ...config, values: { path: 'data..temp' } },
      { ...config, values: [] },
      {
        ...config,
        values: [
          { sensor: 'a', path: 'x' },
          { sensor: 'a', path: 'y' },
        ],
      },
      { ...config, timestamp: { value: 'now' } },
    ]) {
      expect(genericJsonConfigSchema.safeParse(bad).success, JSON.stringify(bad)).toBe(false);
    }
  });

  it('takes ids from topic wildcards and payload paths, values from a list of paths', () => {
    const r = rows(run(generic, payload, params, config));
    expect(r.gateways).toEqual([{ ident: 'dev-7' }]);
    expect(r.dataloggers).toEqual([{ gatewayIdent: 'dev-7', ident: '42' }]);
    expect(r.sensors).toEqual([
      {
        gatewayIdent: 'dev-7',
        dataloggerIdent: '42',
        ident: 't_air',
        name: undefined,
        kind: 'temperature',
        unit: '°C',
      },
      {
        gatewayIdent: 'dev-7',
        dataloggerIdent: '42',
        ident: 'first',
        name: undefined,
        kind: undefined,
        unit: undefined,
      },
    ]);
    expect(r.readings).toEqual([
      { gatewayIdent: 'dev-7', dataloggerIdent: '42', sensorIdent: 't_air', ts, value: 21.5, quality: null },
      { gatewayIdent: 'dev-7', dataloggerIdent: '42', sensorIdent: 'first', ts, value: null, quality: null },
    ]);
  });

  it('reads a values object, fixed ids, and dates messages without a timestamp at the receive time', () => {
    const cfg = { gateway: { value: 'gw' }, datalogger: { path: 'id' }, values: { path: 'v' } };
    const r = rows(run(generic, { id: 'dl', v: { a: 1, b: null } }, {}, cfg));
    expect(r.readings.map((x) => [x.sensorIdent, x.value, x.ts])).toEqual([
      ['a', 1, receivedAt],
      ['b', null, receivedAt],
    ]);
  });

  it('reports what is missing or mistyped at its path', () => {
    expect(
      failure(run(generic, { time: '2026-11-26T10:15:00', data: { temp: '21.5' }, items: [] }, params, config)),
    ).toEqual({ kind: 'schema', paths: ['meta.logger', 'time', 'data.temp', 'items.0.v'] });
    expect(failure(run(generic, { ...payload, meta: { logger: 'bad id' } }, params, config)).paths).toEqual([
      'meta.logger',
    ]);
    expect(failure(run(generic, { ...payload, time: 1 }, params, config)).paths).toEqual(['time']);
    const objectForm = { gateway: { value: 'gw' }, datalogger: { value: 'dl' }, values: { path: 'v' } };
    expect(failure(run(generic, { v: { a: 'NaN', 'bad id': 1 } }, {}, objectForm)).paths).toEqual(['v.a', 'v.bad id']);
    expect(failure(run(generic, { v: [1] }, {}, objectForm)).paths).toEqual(['v']);
    // Own properties only: a path never reaches Object.prototype.
    expect(failure(run(generic, {}, {}, { ...objectForm, values: { path: 'constructor' } })).paths).toEqual([
      'constructor',
    ]);
    expect(
      failure(
        run(generic, { v: Object.fromEntries(Array.from({ length: 1001 }, (_, i) => [`s${i}`, i])) }, {}, objectForm),
      ).kind,
    ).toBe('too_large');
  });

  it('checks topic ids and the site; an invalid config is a processing failure', () => {
    expect(failure(run(generic, payload, { device: 'bad id' }, config)).kind).toBe('invalid_topic');
    expect(failure(run(generic, payload, {}, config)).kind).toBe('invalid_topic');
    expect(failure(run(generic, payload, { ...params, site: 'elsewhere' }, config)).kind).toBe('invalid_topic');
    expect(failure(run(generic, payload, params, { values: 'everything' })).kind).toBe('processing');
  });
});

describe('robustness', () => {
  it('never throws, whatever the JSON', () => {
    const junk: unknown[] = [
      undefined,
      true,
      0,
      '',
      [],
      [{}],
      {},
      { ts: {} },
      { readings: [null] },
      { values: [] },
      { sensors: {} },
      { online: null },
    ];
    const config = {
      gateway: { path: 'a.0' },
      datalogger: { param: 'x' },
      timestamp: { path: 'ts' },
      values: { path: '' },
    };
    for (const p of builtInParsers) {
      for (const json of junk) {
        expect(
          () => run(p, json, DEVICES, p === generic ? config : {}),
          `${p.key} ${JSON.stringify(json)}`,
        ).not.toThrow();
      }
    }
  });
  it('turns a parser bug into a processing failure instead of a throw', () => {
    const parse = guarded('buggy', () => {
      throw new Error('boom');
    });
    expect(parse({}, { topic: 't', params: {}, receivedAt, siteSlug: 'demo', parserConfig: {} })).toEqual({
      ok: false,
      kind: 'processing',
      message: 'parser buggy failed: boom',
      issuePaths: [],
    });
  });
});
