/**
 * One generator per bad-input row of PAYLOADS.md, so a simulated fleet exercises every failure
 * path of the ingestor. Each returns a topic (usually a real data topic) and a payload.
 */
export interface BadMessage {
  kind: string;
  topic: string;
  payload: Buffer | string;
}

const future = () => new Date(Date.now() + 3 * 86_400_000).toISOString();

export const badPayloads: ((dataTopic: string, site: string) => BadMessage)[] = [
  (t) => ({ kind: 'not-utf8', topic: t, payload: Buffer.from([0xff, 0xfe, 0x7b, 0x00, 0xc3]) }),
  (t) => ({ kind: 'not-json', topic: t, payload: '{"ts": 17641521, "readings": [' }),
  (t) => ({ kind: 'json-array', topic: t, payload: '[]' }),
  (t) => ({ kind: 'json-number', topic: t, payload: '42' }),
  (t) => ({ kind: 'json-null', topic: t, payload: 'null' }),
  (t) => ({ kind: 'missing-ts', topic: t, payload: JSON.stringify({ readings: [{ sensor: 't_air', value: 1 }] }) }),
  (t) => ({ kind: 'missing-readings', topic: t, payload: JSON.stringify({ ts: new Date().toISOString() }) }),
  (t) => ({
    kind: 'numeric-string',
    topic: t,
    payload: JSON.stringify({ ts: new Date().toISOString(), readings: [{ sensor: 't_air', value: '21.4' }] }),
  }),
  (t) => ({
    kind: 'nan-string',
    topic: t,
    payload: JSON.stringify({ ts: new Date().toISOString(), values: { t_air: 'NaN' } }),
  }),
  (t) => ({ kind: 'future-ts', topic: t, payload: JSON.stringify({ ts: future(), values: { t_air: 1 } }) }),
  (t) => ({
    kind: 'ancient-ts',
    topic: t,
    payload: JSON.stringify({ ts: '1999-12-31T23:59:59Z', values: { t_air: 1 } }),
  }),
  (t) => ({
    kind: 'too-many-readings',
    topic: t,
    payload: JSON.stringify({
      ts: new Date().toISOString(),
      readings: Array.from({ length: 1001 }, (_, i) => ({ sensor: `s${i}`, value: i })),
    }),
  }),
  (t) => ({
    kind: 'oversized',
    topic: t,
    payload: JSON.stringify({ ts: new Date().toISOString(), pad: 'x'.repeat(300 * 1024) }),
  }),
  (t) => ({ kind: 'deeply-nested', topic: t, payload: '['.repeat(5000) + ']'.repeat(5000) }),
  (_t, site) => ({
    kind: 'bad-gateway-id',
    topic: `${site}/gateway/bad id!/datalogger/dl-1/data`,
    payload: JSON.stringify({ ts: new Date().toISOString(), values: { t_air: 1 } }),
  }),
  (_t, site) => ({
    kind: 'long-topic',
    topic: `${site}/gateway/${'x'.repeat(1100)}/status`,
    payload: '{"online":true}',
  }),
  (t, site) => ({
    kind: 'wrong-site',
    topic: t.replace(`${site}/`, `not-${site}/`),
    payload: JSON.stringify({ ts: new Date().toISOString(), values: { t_air: 1 } }),
  }),
];
