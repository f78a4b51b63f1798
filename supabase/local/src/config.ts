import path from 'node:path';
import { z } from 'zod';
import { parseEnv } from '@bfg/ingestor';
import { LocalStackError } from './errors.ts';
import { repoRoot } from './paths.ts';

const port = z.coerce.number().int().min(1).max(65535);

const envSchema = z.object({
  /** Use this database instead of starting embedded Postgres (e.g. a Supabase connection string). */
  DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/ }).optional(),
  /** Where the local stack keeps its data (Postgres cluster, generated secrets). */
  BFG_DATA_DIR: z.string().min(1).default(path.join(repoRoot, '.data')),
  /** Port of the embedded Postgres. 54322 is the Supabase CLI's local database port. */
  BFG_DB_PORT: port.default(54322),
  /** Name of the application database in the embedded cluster. */
  BFG_DB_NAME: z
    .string()
    .regex(/^[a-z_][a-z0-9_]{0,62}$/, 'lowercase letters, digits and _')
    .default('bfg'),
  /** Port of the embedded demo MQTT broker (the seeded demo connection points at 1883). */
  BFG_MQTT_PORT: port.default(1883),
  /** Port of the local Supabase Realtime-protocol server (54321 is the Supabase CLI's API port). */
  BFG_REALTIME_PORT: port.default(54321),
  /** JWT secret for the realtime server with DATABASE_URL (embedded mode generates one in secrets.json). */
  BFG_JWT_SECRET: z.string().min(32).optional(),
  /**
   * Run an ingestor in the stack. false: none, so that standalone instances (`npm run ingestor`,
   * each with its own BFG_INSTANCE_ID) can share the connections against this stack's database.
   */
  BFG_INGESTOR: z
    .enum(['true', 'false'])
    .default('true')
    .transform((value) => value === 'true'),
  /** Run the device simulator against the demo broker. */
  BFG_SIMULATE: z
    .enum(['true', 'false'])
    .default('true')
    .transform((value) => value === 'true'),
  /** Port of the dashboard. */
  BFG_WEB_PORT: port.default(3000),
  /** Run the dashboard (needs `npm run build -w @bfg/web`; `npm start` builds it). */
  BFG_WEB: z
    .enum(['true', 'false'])
    .default('true')
    .transform((value) => value === 'true'),
  /** Address the local services listen on. Loopback unless you mean to expose them. */
  BFG_LISTEN_HOST: z.string().min(1).default('127.0.0.1'),
});

export type LocalConfig = Readonly<z.infer<typeof envSchema>>;

/**
 * Reads the local stack's configuration from the environment. Fails with one message that names
 * every bad variable, so a user fixes them all in one go.
 */
export function loadLocalConfig(env: NodeJS.ProcessEnv = process.env): LocalConfig {
  return Object.freeze(parseEnv(envSchema, env, (message) => new LocalStackError(message)));
}
