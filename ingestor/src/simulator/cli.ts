#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { runSimulation } from './run-simulation.ts';

const USAGE = `Usage: npm run simulate -- [options]

Publishes a realistic BFG fleet to an MQTT broker.

  --url URL            broker URL (default mqtt://127.0.0.1:1883)
  --username NAME      broker user (password from MQTT_PASSWORD)
  --sites a,b          site slugs (default demo)
  --gateways N         gateways per site (default 3)
  --dataloggers N      dataloggers per gateway (default 2)
  --sensors N          sensors per datalogger (default 4)
  --interval S         seconds between data messages of one datalogger (default 5)
  --bad-fraction F     share of data messages replaced by bad payloads of every kind (default 0)
  --qos 0|1            (default 1)
  --count N            stop after N data messages (default: run until Ctrl-C)`;

const optionsSchema = z.object({
  url: z
    .string()
    .regex(/^(mqtts?|wss?):\/\//, 'an mqtt://, mqtts://, ws:// or wss:// URL')
    .default('mqtt://127.0.0.1:1883'),
  username: z.string().optional(),
  sites: z
    .string()
    .default('demo')
    .transform((s) =>
      s
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean),
    ),
  gateways: z.coerce.number().int().min(1).max(10_000).default(3),
  dataloggers: z.coerce.number().int().min(1).max(100).default(2),
  sensors: z.coerce.number().int().min(1).max(1000).default(4),
  interval: z.coerce.number().positive().default(5),
  'bad-fraction': z.coerce.number().min(0).max(1).default(0),
  qos: z.enum(['0', '1']).default('1').transform(Number),
  count: z.coerce.number().int().min(0).default(0),
});

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      url: { type: 'string' },
      username: { type: 'string' },
      sites: { type: 'string' },
      gateways: { type: 'string' },
      dataloggers: { type: 'string' },
      sensors: { type: 'string' },
      interval: { type: 'string' },
      'bad-fraction': { type: 'string' },
      qos: { type: 'string' },
      count: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const { help: _help, ...rest } = values;
  const parsed = optionsSchema.safeParse(rest);
  if (!parsed.success) {
    console.error(
      `Invalid options:\n${parsed.error.issues.map((i) => `  --${i.path.join('.')}: ${i.message}`).join('\n')}\n\n${USAGE}`,
    );
    process.exitCode = 2;
    return;
  }
  const o = parsed.data;
  const controller = new AbortController();
  process.once('SIGINT', () => controller.abort());
  process.once('SIGTERM', () => controller.abort());
  const stats = await runSimulation(
    {
      url: o.url,
      username: o.username,
      password: process.env['MQTT_PASSWORD'],
      sites: o.sites,
      gateways: o.gateways,
      dataloggers: o.dataloggers,
      sensors: o.sensors,
      intervalS: o.interval,
      badFraction: o['bad-fraction'],
      qos: o.qos as 0 | 1,
      count: o.count,
      mixForms: true,
    },
    controller.signal,
    (line) => console.log(`[simulate] ${line}`),
  );
  console.log(`[simulate] sent ${stats.data} data messages (${stats.readings} readings) and ${stats.bad} bad payloads`);
}

main().catch((err: unknown) => {
  console.error('[simulate] failed:', err instanceof Error ? err.message : err);
  process.exitCode = 1;
});
