#!/usr/bin/env node
/**
 * `npm run bench:realtime`: the local Realtime server under load. N supabase-js clients join one
 * channel following INSERTs on a table; a writer inserts rows at a steady rate; each callback
 * measures commit → callback latency from the row's `sent_at` (clock_timestamp() at insert; same
 * machine clock). Runs without RLS (anon may read the table) and with RLS (a policy per row), and
 * prints delivered messages/s and p50/p95/p99 latency. Supabase's published figures for its
 * smallest instance with 500 clients: 64 changes/s at p95 238 ms without RLS, 30 changes/s with RLS.
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createClient, type SupabaseClient } from '@supabase/supabase-js';
import postgres from 'postgres';
import { getFreePort, migrate, startEmbeddedPostgres, startRealtimeServer } from '@bfg/local';
import { signJwt } from '../support/jwt.ts';
import { makeTempDir } from '../support/temp-dir.ts';

const { values } = parseArgs({ options: { clients: { type: 'string', default: '500' }, rate: { type: 'string', default: '100' }, seconds: { type: 'string', default: '10' } } });
const CLIENTS = Number(values.clients);
const RATE = Number(values.rate);
const SECONDS = Number(values.seconds);

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

async function main(): Promise<void> {
  const dir = await makeTempDir('bench-rt');
  const pg = await startEmbeddedPostgres({ dataDir: path.join(dir.path, 'pg'), port: await getFreePort(), password: randomBytes(12).toString('hex') });
  const url = pg.urlFor('postgres');
  const sql = postgres(url, { max: 8, onnotice: () => undefined });
  const secret = randomBytes(32).toString('hex');
  await migrate(sql);
  const server = await startRealtimeServer({ port: await getFreePort(), jwtSecret: secret, sql, databaseUrl: url });
  const anon = await signJwt(secret, { role: 'anon' });
  console.log(`bench:realtime — ${CLIENTS} clients on one channel, ${RATE} changes/s for ${SECONDS} s, on this machine\n`);
  try {
    for (const rls of [false, true]) {
      const table = rls ? 'bench_event_rls' : 'bench_event';
      await sql.unsafe(`create table public.${table} (id bigint generated always as identity primary key, sent_at timestamptz not null default clock_timestamp(), n int not null);
        grant select on public.${table} to anon;
        alter publication supabase_realtime add table public.${table};
        ${rls ? `alter table public.${table} enable row level security; create policy "anon reads even rows" on public.${table} for select to anon using (n % 2 = 0 or n % 2 = 1);` : ''}`);
      const latencies: number[] = [];
      const clients: SupabaseClient[] = [];
      await Promise.all(Array.from({ length: CLIENTS }, async () => {
        const client = createClient(server.url, anon, { auth: { persistSession: false } });
        clients.push(client);
        await new Promise<void>((resolve, reject) => {
          client.channel('bench').on('postgres_changes', { event: 'INSERT', schema: 'public', table }, (p) => {
            latencies.push(Date.now() - Date.parse(String(p.new['sent_at'])));
          }).subscribe((state) => {
            const status = String(state);
            if (status === 'SUBSCRIBED') resolve();
            else if (status === 'CHANNEL_ERROR') reject(new Error(status));
          });
        });
      }));
      const total = RATE * SECONDS;
      const started = performance.now();
      for (let i = 0; i < total; i++) {
        await sql.unsafe(`insert into public.${table} (n) values (${i})`);
        const due = started + ((i + 1) * 1000) / RATE;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      }
      const expected = total * CLIENTS;
      const deadline = Date.now() + 60_000;
      while (latencies.length < expected && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
      const seconds = (performance.now() - started) / 1000;
      const sorted = [...latencies].sort((a, b) => a - b);
      console.log(`${rls ? 'with RLS   ' : 'without RLS'}: ${total} changes → ${latencies.length}/${expected} delivered, ${(latencies.length / seconds).toFixed(0)} msgs/s, ` +
        `latency p50 ${percentile(sorted, 50)} ms, p95 ${percentile(sorted, 95)} ms, p99 ${percentile(sorted, 99)} ms`);
      await Promise.all(clients.map((c) => c.removeAllChannels()));
    }
  } finally {
    await server.close();
    await sql.end();
    await pg.stop();
    await dir.remove();
  }
}

main().then(() => process.exit(0), (err: unknown) => {
  console.error(err);
  process.exit(1);
});
