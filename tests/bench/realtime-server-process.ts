#!/usr/bin/env node
/**
 * The local Realtime server alone in a process, for bench:realtime: so that its RSS is its own and
 * not the 500 clients'. Reads DATABASE_URL, BFG_JWT_SECRET; listens on a free port and prints
 * `listening <port>`, then `rss <bytes>` and `cpu <µs used so far>` every 250 ms and `stats <json>` on SIGTERM before it exits.
 */
import postgres from 'postgres';
import { getFreePort, startRealtimeServer } from '@bfg/local';

const url = process.env['DATABASE_URL']!;
const sql = postgres(url, { max: 8, onnotice: () => undefined });
const server = await startRealtimeServer({
  port: await getFreePort(),
  jwtSecret: process.env['BFG_JWT_SECRET']!,
  sql,
  databaseUrl: url,
  log: (m) => console.log(`log ${m}`),
});
console.log(`listening ${server.port}`);
const rss = setInterval(() => {
  const cpu = process.cpuUsage();
  console.log(`rss ${process.memoryUsage().rss}`);
  console.log(`cpu ${cpu.user + cpu.system}`);
}, 250);
process.once('SIGTERM', () => {
  clearInterval(rss);
  console.log(`stats ${JSON.stringify(server.stats)}`);
  void server
    .close()
    .then(() => sql.end())
    .then(() => process.exit(0));
});
