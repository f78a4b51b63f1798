#!/usr/bin/env node
/**
 * Where an ingestor's time went, from a V8 CPU profile (`BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=DIR"
 * npm run bench:ingest` writes one per thread; the main thread's is the largest).
 *
 *   node tests/bench/profile-split.ts DIR/CPU.….cpuprofile [--top 25]
 *
 * Prints the share of samples per area — MQTT decoding, JSON, validation, our pipeline, batch
 * building, postgres.js (serialization and parsing of the wire protocol), logging, GC, idle (the
 * event loop waiting: on Postgres, on the broker) — and the hottest functions by self time. A
 * sample counts for the function on top of the stack; built-ins without a script (JSON.parse,
 * Buffer ops, regexps) and Node's own stream code count for the area of the frame that called them.
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
  hitCount?: number;
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const AREAS: [RegExp, string][] = [
  [
    /node_modules\/(mqtt|mqtt-packet|bl|readable-stream|commist|number-allocator|rfdc|debug|ws)\//,
    'MQTT (mqtt.js, packets)',
  ],
  [/node_modules\/zod\//, 'validation (zod)'],
  [/node_modules\/postgres\//, 'postgres.js (protocol, serialization)'],
  [/node_modules\/(pino|sonic-boom|thread-stream|pino-roll|pino-abstract-transport)\//, 'logging'],
  [/node_modules\/prom-client\//, 'metrics'],
  [/node_modules\/(graphile-worker|pg|pg-protocol|pg-pool)\//, 'jobs (graphile-worker)'],
  [/node_modules\/mqtt-pattern\//, 'pipeline (match, discovery, acks)'],
  [/ingestor\/src\/parsers\//, 'parsers (ours)'],
  [/ingestor\/src\/(write-batch|sql\/|batch-writer)/, 'batch building (ours)'],
  [/ingestor\/src\//, 'pipeline (match, discovery, acks)'],
];

function areaOfUrl(url: string): string | undefined {
  for (const [re, area] of AREAS) if (re.test(url)) return area;
  return undefined;
}

function main(): void {
  const { values, positionals } = parseArgs({
    options: { top: { type: 'string', default: '25' } },
    allowPositionals: true,
  });
  const file = positionals[0];
  if (!file) throw new Error('usage: profile-split.ts <file.cpuprofile> [--top N]');
  const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  const areaCache = new Map<number, string>();
  const areaOf = (id: number): string => {
    const cached = areaCache.get(id);
    if (cached) return cached;
    const node = byId.get(id)!;
    const { functionName, url } = node.callFrame;
    let area: string;
    if (functionName === '(idle)') area = 'idle (waiting on I/O)';
    else if (functionName === '(garbage collector)') area = 'GC';
    else if (functionName === '(program)') area = 'V8/native (unattributed)';
    else if (functionName === '(root)') area = 'node runtime';
    else if (url === '' && functionName === 'parse' && areaOf(parent.get(id)!).startsWith('pipeline'))
      area = 'JSON.parse';
    else {
      const own = url && !url.startsWith('node:') ? areaOfUrl(url) : undefined;
      if (own) area = own;
      else {
        const up = parent.get(id);
        area = up === undefined ? 'node runtime' : areaOf(up);
        if (area === 'idle (waiting on I/O)' || area === 'GC' || area === 'V8/native (unattributed)')
          area = 'node runtime';
      }
    }
    areaCache.set(id, area);
    return area;
  };

  const areaMs = new Map<string, number>();
  const selfMs = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    const ms = (profile.timeDeltas[i] ?? 0) / 1000;
    total += ms;
    const area = areaOf(id);
    areaMs.set(area, (areaMs.get(area) ?? 0) + ms);
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    const where = url ? `${url.replace(/^.*\/(node_modules|ingestor)\//, '$1/')}:${lineNumber + 1}` : '(native)';
    const key = `${functionName || '(anonymous)'} ${where}`;
    selfMs.set(key, (selfMs.get(key) ?? 0) + ms);
  }
  const pct = (ms: number) => `${((100 * ms) / total).toFixed(1).padStart(5)} %`;
  console.log(`${file}: ${(total / 1000).toFixed(1)} s sampled\n`);
  for (const [area, ms] of [...areaMs].sort((a, b) => b[1] - a[1])) console.log(`${pct(ms)}  ${area}`);
  console.log('\nhottest functions (self time):');
  for (const [key, ms] of [...selfMs].sort((a, b) => b[1] - a[1]).slice(0, Number(values.top)))
    console.log(`${pct(ms)}  ${key}`);
}

main();
