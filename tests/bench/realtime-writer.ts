#!/usr/bin/env node
/**
 * bench:realtime's writer, in its own process so that the pace of inserts does not depend on the
 * clients' event loop: inserts RATE rows per second into TABLE for SECONDS, one statement each, and
 * prints `reached <changes/s>`. Args: <database url> <table> <rate> <seconds>.
 */
import postgres from 'postgres';

const [url, table, rateText, secondsText] = process.argv.slice(2) as [string, string, string, string];
const rate = Number(rateText);
const total = rate * Number(secondsText);
const sql = postgres(url, { max: 4, onnotice: () => undefined });
const started = performance.now();
let inFlight = 0;
for (let i = 0; i < total; i++) {
  // Up to 4 inserts in flight keep the pace when one round trip is slower than the interval.
  while (inFlight >= 4) await new Promise((resolve) => setImmediate(resolve));
  inFlight += 1;
  // unsafe: the table name is the benchmark's own constant.
  void sql.unsafe(`insert into public.${table} (n) values ($1)`, [i]).finally(() => (inFlight -= 1));
  const wait = started + ((i + 1) * 1000) / rate - performance.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
}
while (inFlight > 0) await new Promise((resolve) => setImmediate(resolve));
console.log(`reached ${total / ((performance.now() - started) / 1000)}`);
await sql.end();
