import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  bfgDataloggerDataParser,
  dataParserSpec,
  dataSchema,
  fastDataParse,
} from '../../ingestor/src/parsers/bfg-datalogger-data.ts';
import { fromSchema, type ParseContext } from '../../ingestor/src/parsers/index.ts';

/**
 * The data parser's validation fast path (fastDataParse) skips zod's walk for healthy payloads.
 * Its contract: whatever it accepts, zod accepts with the same output; everything else goes to zod.
 * Checked here on generated payloads that are mostly near-valid (the edges of each rule: idents,
 * finite numbers, qualities, epoch and ISO timestamps with impossible dates and offsets, seq,
 * unknown keys, both or neither form), so both sides of every check are exercised.
 */

const receivedAt = new Date('2026-11-26T10:15:30Z');
const ctx: ParseContext = {
  topic: 'demo/gateway/gw-1/datalogger/dl-1/data',
  params: { site: 'demo', gateway: 'gw-1', datalogger: 'dl-1' },
  receivedAt,
  siteSlug: 'demo',
  parserConfig: {},
};

const sensor = fc.oneof(
  fc.constantFrom('t_air', 'rh', 'p.atm', 'X-1', 'a'.repeat(64), 'a'.repeat(65), '', 'bad id', 'é', '__proto__', '123'),
  fc.stringMatching(/^[A-Za-z0-9_.-]{1,8}$/),
  fc.string({ maxLength: 6 }),
);
const value = fc.oneof(
  fc.double(),
  fc.integer(),
  fc.constantFrom(null, 0, -0, 1e21, Infinity, -Infinity, NaN, '21.4', true, undefined),
);
const quality = fc.constantFrom(undefined, null, 'good', 'suspect', 'bad', 'GOOD', '', 1);
const isoTs = fc
  .tuple(
    fc.integer({ min: 1990, max: 2100 }),
    fc.integer({ min: 0, max: 13 }),
    fc.integer({ min: 0, max: 32 }),
    fc.integer({ min: 0, max: 24 }),
    fc.constantFrom('Z', '+01:00', '-23:59', '+24:00', '', 'z', '+0100'),
    fc.constantFrom('', '.5', '.123456', '.'),
  )
  .map(
    ([y, mo, d, h, off, frac]) =>
      `${y}-${String(mo).padStart(2, '0')}-${String(d).padStart(2, '0')}T${String(h).padStart(2, '0')}:15:00${frac}${off}`,
  );
const ts = fc.oneof(
  isoTs,
  fc.integer({ min: 0, max: 2 ** 42 }),
  fc.double({ min: 0, max: 1e14 }),
  fc.constantFrom(1764152100, 1764152100123, -1, 946684799, 946684800, 8.64e12, 8.64e15 + 1, '1764152100', null),
  fc.constant(undefined),
);
const reading = fc.oneof(
  fc.record({ sensor, value, quality }, { requiredKeys: ['sensor', 'value'] }),
  fc.record({ sensor, value, extra: fc.string() }),
  fc.constantFrom(null, 42, [], 'x'),
);
/** Payloads healthy devices send: the accepting side of every rule. */
const validIdent = fc.stringMatching(/^[A-Za-z0-9_.-]{1,12}$/);
const validValue = fc.oneof(fc.double({ noNaN: true, noDefaultInfinity: true }), fc.integer(), fc.constant(null));
const validTs = fc.oneof(
  fc.integer({ min: 946_684_800, max: 1_796_000_000 }),
  fc.integer({ min: 946_684_800_000, max: 1_796_000_000_000 }),
  fc
    .date({ min: new Date('2000-01-01'), max: new Date('2030-01-01'), noInvalidDate: true })
    .map((d) => d.toISOString()),
);
const validPayload = fc.oneof(
  fc.record(
    {
      ts: validTs,
      seq: fc.nat(),
      readings: fc.array(
        fc.record(
          { sensor: validIdent, value: validValue, quality: fc.constantFrom('good', 'suspect', 'bad', null) },
          { requiredKeys: ['sensor', 'value'] },
        ),
        { maxLength: 8 },
      ),
    },
    { requiredKeys: ['ts', 'readings'] },
  ),
  fc.record({ ts: validTs, values: fc.dictionary(validIdent, validValue, { maxKeys: 8 }) }),
);
/** A healthy payload with one thing gone wrong (or merely unusual). */
const mutated = fc
  .tuple(
    validPayload,
    fc.constantFrom('ts', 'seq', 'readings', 'values', 'extra'),
    fc.oneof(ts, value, reading, sensor),
  )
  .map(([json, key, junk]) => ({ ...json, [key]: junk }));
const payload = fc.oneof(
  { arbitrary: validPayload, weight: 3 },
  { arbitrary: mutated, weight: 3 },
  fc.record(
    {
      ts,
      seq: fc.oneof(fc.nat(), fc.constantFrom(-1, 1.5, 2 ** 53, '1', null)),
      readings: fc.oneof(fc.array(reading, { maxLength: 6 }), fc.constantFrom('nope', {}, null)),
      values: fc.oneof(fc.dictionary(sensor, value, { maxKeys: 5 }), fc.constantFrom([], null, 'x')),
      other: fc.anything(),
    },
    { requiredKeys: [] },
  ),
  fc.constantFrom(null, [], 42, 'x', true),
);

describe('bfg.datalogger-data.v1 validation fast path', () => {
  it('accepts only what zod accepts, with the same output', () => {
    let accepted = 0;
    fc.assert(
      fc.property(payload, (json) => {
        const fast = fastDataParse(json);
        if (fast === undefined) return;
        accepted++;
        const parsed = dataSchema.safeParse(json);
        expect(parsed.success).toBe(true);
        expect(fast).toStrictEqual(parsed.data);
      }),
      { numRuns: 20_000 },
    );
    // The generator reaches the accepting side often enough for the property to mean something.
    expect(accepted).toBeGreaterThan(500);
  });

  it('takes the payloads healthy devices send, in both forms', () => {
    for (const json of [
      { ts: '2026-11-26T10:15:00Z', seq: 48213, readings: [{ sensor: 't_air', value: 21.4 }] },
      { ts: '2026-11-26T10:15:00.123+01:00', readings: [{ sensor: 'rh', value: null, quality: 'bad' }] },
      { ts: 1764152100, values: { t_air: 21.4, rh: 55.2 } },
      { ts: 1764152100123, values: {} },
    ]) {
      expect(fastDataParse(json), JSON.stringify(json)).toStrictEqual(dataSchema.parse(json));
    }
  });

  it('gives the parser the same result as zod alone, failures included', () => {
    const zodOnly = fromSchema({ ...dataParserSpec, fastParse: undefined });
    fc.assert(
      fc.property(payload, (json) => {
        expect(bfgDataloggerDataParser.parse(json, ctx)).toStrictEqual(zodOnly.parse(json, ctx));
      }),
      { numRuns: 10_000 },
    );
  });
});
