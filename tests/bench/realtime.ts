#!/usr/bin/env node
/**
 * `npm run bench:realtime`: the local Realtime server under load. N supabase-js clients join one
 * channel following INSERTs on a table; a writer inserts rows at each steady rate; each callback
 * measures commit → callback latency from the row's `sent_at` (clock_timestamp() at insert; same
 * machine clock; the writer runs in a process of its own, so its pace does not depend on the
 * clients' event loop). Runs without RLS (anon may read the table) and with RLS (a policy per row, the
 * clients signed in as one user, or with `--claims distinct` each as its own: the server checks
 * RLS once per distinct set of claims per round of changes). The server runs in its own process: the figures include its peak RSS and how
 * many sockets it closed for reading too slowly (those clients were told, not silently starved).
 * Supabase's published figures for its smallest instance with 500 clients: 64 changes/s at p95
 * 238 ms without RLS, 30 changes/s with RLS.
 */
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createClient, type SupabaseClient } from '@supabase/supabase-js';
import postgres from 'postgres';
import { getFreePort, migrate, startEmbeddedPostgres } from '@bfg/local';
import { signJwt } from '../support/jwt.ts';
import { makeTempDir } from '../support/temp-dir.ts';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '500' },
    rates: { type: 'string', default: '100,300,1000' },
    rate: { type: 'string' },
    seconds: { type: 'string', default: '10' },
    rls: { type: 'string', default: 'false,true' },
    // shared: every client the same user (as the earlier runs); distinct: a user per client.
    claims: { type: 'string', default: 'shared' },
  },
});
const DISTINCT = values.claims === 'distinct';
const CLIENTS = Number(values.clients);
const RATES = (values.rate ?? values.rates).split(',').map(Number);
const SECONDS = Number(values.seconds);
const RLS_MODES = values.rls.split(',').map((v) => v === 'true');

const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

async function startServer(url: string, secret: string) {
  // BFG_BENCH_PROFILE=<dir>: the server writes a CPU profile there (node --cpu-prof) when it exits.
  const profile = process.env['BFG_BENCH_PROFILE']
    ? ['--cpu-prof', `--cpu-prof-dir=${process.env['BFG_BENCH_PROFILE']}`]
    : [];
  const child = spawn(process.execPath, [...profile, path.join(import.meta.dirname, 'realtime-server-process.ts')], {
    env: { ...process.env, DATABASE_URL: url, BFG_JWT_SECRET: secret },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let peakRss = 0;
  let slowClosed = 0;
  let cpu = 0;
  let cpuAtReset = 0;
  let resetAt = performance.now();
  let stats = '';
  let buffer = '';
  const port = await new Promise<number>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`realtime server exited (${code})`)));
    child.stdout.on('data', (chunk: Buffer) => {
      buffer += chunk.toString();
      const lines = buffer.split('\n');
      buffer = lines.pop()!;
      for (const line of lines) {
        if (line.startsWith('listening ')) resolve(Number(line.slice(10)));
        else if (line.startsWith('rss ')) peakRss = Math.max(peakRss, Number(line.slice(4)));
        else if (line.startsWith('cpu ')) cpu = Number(line.slice(4));
        else if (line.startsWith('stats ')) stats = line.slice(6);
        else if (line.includes('reads too slowly')) slowClosed += 1;
        else if (line.startsWith('log ') && !line.includes('replication connected'))
          console.log(`  server: ${line.slice(4)}`);
      }
    });
  });
  return {
    url: `http://127.0.0.1:${port}`,
    /** Peak RSS, sockets closed as too slow, and the server's CPU use (share of one core) since the reset. */
    measure: () => ({ peakRss, slowClosed, cpuShare: (cpu - cpuAtReset) / 1000 / (performance.now() - resetAt) }),
    resetPeak: () => {
      peakRss = 0;
      slowClosed = 0;
      cpuAtReset = cpu;
      resetAt = performance.now();
    },
    async stop() {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
      return stats;
    },
  };
}

/** Inserts at `rate` rows/s for `seconds` from a process of its own; resolves with the rate reached. */
async function runWriter(url: string, table: string, rate: number, seconds: number): Promise<number> {
  const child = spawn(
    process.execPath,
    [path.join(import.meta.dirname, 'realtime-writer.ts'), url, table, String(rate), String(seconds)],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  const reached = /reached ([\d.]+)/.exec(out);
  if (code !== 0 || !reached) throw new Error(`the writer failed (exit ${code}): ${out}`);
  return Number(reached[1]);
}

async function main(): Promise<void> {
  const dir = await makeTempDir('bench-rt');
  const pg = await startEmbeddedPostgres({
    dataDir: path.join(dir.path, 'pg'),
    port: await getFreePort(),
    password: randomBytes(12).toString('hex'),
  });
  const url = pg.urlFor('postgres');
  const sql = postgres(url, { max: 8, onnotice: () => undefined });
  const secret = randomBytes(32).toString('hex');
  await migrate(sql);
  await sql.unsafe(`
    create table public.bench_event (id bigint generated always as identity primary key, sent_at timestamptz not null default clock_timestamp(), n int not null);
    grant select on public.bench_event to anon, authenticated;
    create table public.bench_event_rls (id bigint generated always as identity primary key, sent_at timestamptz not null default clock_timestamp(), n int not null);
    grant select on public.bench_event_rls to authenticated;
    alter table public.bench_event_rls enable row level security;
    create policy "signed-in users read rows" on public.bench_event_rls for select to authenticated using ((select auth.uid()) is not null and n >= 0);
    alter publication supabase_realtime add table public.bench_event, public.bench_event_rls;`);
  const server = await startServer(url, secret);
  const anon = await signJwt(secret, { role: 'anon' });
  console.log(
    `bench:realtime — ${CLIENTS} supabase-js clients on one channel, ${RATES.join(' / ')} changes/s for ${SECONDS} s each, ` +
      `claims ${DISTINCT ? 'distinct per client' : 'shared'}, on this machine (server in its own process)\n`,
  );
  console.log(
    '| changes/s asked | reached | RLS | delivered | msgs/s | p50 | p95 | p99 | sockets closed as too slow | server CPU | server peak RSS |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  try {
    for (const rls of RLS_MODES) {
      const table = rls ? 'bench_event_rls' : 'bench_event';
      let latencies: number[] = [];
      const clients: SupabaseClient[] = [];
      // Under RLS, signed in: one user for all (one check per round) or one per client (one per client per round).
      const shared = await signJwt(secret, { role: 'authenticated', sub: randomUUID() });
      await Promise.all(
        Array.from({ length: CLIENTS }, async () => {
          const token = !rls
            ? anon
            : DISTINCT
              ? await signJwt(secret, { role: 'authenticated', sub: randomUUID() })
              : shared;
          const client = createClient(server.url, anon, { accessToken: () => Promise.resolve(token) });
          clients.push(client);
          // The token first: a join sent before the accessToken callback resolves carries the anon key.
          await client.realtime.setAuth();
          await new Promise<void>((resolve, reject) => {
            client
              .channel('bench')
              .on('postgres_changes', { event: 'INSERT', schema: 'public', table }, (p) => {
                latencies.push(Date.now() - Date.parse(String(p.new['sent_at'])));
              })
              // The feed is live at "Subscribed to PostgreSQL", not at SUBSCRIBED.
              .on('system', {}, (m: { extension?: string; status?: string; message?: string }) => {
                if (m.extension !== 'postgres_changes') return;
                if (m.status === 'ok') resolve();
                else reject(new Error(m.message));
              })
              .subscribe((state) => {
                if (String(state) === 'CHANNEL_ERROR') reject(new Error(String(state)));
              });
          });
        }),
      );
      for (const rate of RATES) {
        latencies = [];
        server.resetPeak();
        const total = rate * SECONDS;
        const started = performance.now();
        const reached = await runWriter(url, table, rate, SECONDS);
        const expected = total * CLIENTS;
        const deadline = Date.now() + 60_000;
        while (latencies.length < expected && Date.now() < deadline)
          await new Promise((resolve) => setTimeout(resolve, 100));
        const seconds = (performance.now() - started) / 1000;
        const sorted = [...latencies].sort((a, b) => a - b);
        const { peakRss, slowClosed, cpuShare } = server.measure();
        console.log(
          `| ${rate} | ${reached.toFixed(0)} | ${rls ? 'yes' : 'no'} | ${latencies.length.toLocaleString('en')}/${expected.toLocaleString('en')} | ` +
            `${(latencies.length / seconds).toFixed(0)} | ${percentile(sorted, 50)} ms | ${percentile(sorted, 95)} ms | ${percentile(sorted, 99)} ms | ` +
            `${slowClosed} | ${(cpuShare * 100).toFixed(0)} % | ${(peakRss / 2 ** 20).toFixed(0)} MB |`,
        );
      }
      await Promise.all(clients.map((c) => c.removeAllChannels()));
    }
  } finally {
    const stats = await server.stop();
    if (stats) console.log(`\nserver dispatch totals: ${stats}`);
    await sql.end();
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
