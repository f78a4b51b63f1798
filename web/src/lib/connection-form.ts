import { z } from 'zod';

// The connection settings form: what a browser may submit, validated the same way the database's
// check constraints would, so that a bad value gets a message next to its field instead of a
// failed UPDATE. Values arrive as FormData strings.

const checkbox = z.preprocess((v) => v === 'on' || v === 'true', z.boolean());
const optionalText = z.preprocess(
  (v) => (typeof v === 'string' && v.trim() === '' ? null : typeof v === 'string' ? v.trim() : v),
  z.string().max(255).nullable(),
);
const integer = (min: number, max: number, what: string) =>
  z.preprocess(
    (v) => (typeof v === 'string' && v.trim() !== '' ? Number(v) : v),
    z
      .number({ error: `${what} is required` })
      .int(`${what} must be a whole number`)
      .min(min, `${what} must be at least ${min}`)
      .max(max, `${what} must be at most ${max}`),
  );

/** An MQTT subscription filter: `#` only last, wildcards only as whole levels. */
const mqttFilter = z
  .string()
  .min(1)
  .max(1024)
  .refine(
    (f) =>
      f
        .split('/')
        .every((level, i, all) => (level === '#' ? i === all.length - 1 : !/[#+]/.test(level) || level === '+')),
    { message: 'is not a valid MQTT filter (# only as the last level, + and # only as whole levels)' },
  );

export const connectionSettingsSchema = z.object({
  host: z
    .string()
    .trim()
    .min(1, 'Host is required')
    .max(255)
    .regex(/^[A-Za-z0-9.\-:[\]]+$/, 'Host must be a hostname or IP address'),
  port: integer(1, 65535, 'Port'),
  protocol: z.enum(['mqtt', 'mqtts', 'ws', 'wss'], { error: 'Choose mqtt, mqtts, ws or wss' }),
  ws_path: z
    .string()
    .trim()
    .regex(/^\/\S*$/, 'WebSocket path must start with /')
    .default('/mqtt'),
  protocol_version: z.preprocess(
    (v) => Number(v),
    z.union([z.literal(4), z.literal(5)], { error: 'MQTT version must be 3.1.1 (4) or 5' }),
  ),
  username: optionalText,
  client_id: z
    .string()
    .trim()
    .max(128, 'Client id must be at most 128 characters')
    .regex(/^[\x21-\x7e]*$/, 'Client id must be printable ASCII without spaces')
    .default(''),
  clean_start: checkbox,
  session_expiry_s: integer(0, 2_147_483_647, 'Session expiry'),
  keepalive_s: integer(0, 65_535, 'Keepalive'),
  subscribe_filters: z.preprocess(
    (v) =>
      typeof v === 'string'
        ? v
            .split('\n')
            .map((l) => l.trim())
            .filter(Boolean)
        : v,
    z.array(mqttFilter, { error: 'One filter per line' }).max(50, 'At most 50 filters'),
  ),
  reject_unauthorized: checkbox,
  share_group: z.preprocess(
    (v) => (v === '' ? null : v),
    z
      .string()
      .regex(/^[^/#+]{1,64}$/, 'Share group must not contain /, # or +')
      .nullable(),
  ),
});
export type ConnectionSettings = z.infer<typeof connectionSettingsSchema>;

/** Secrets are write-only: empty = keep what is stored; the "clear" box removes it. */
const secret = (max: number) =>
  z
    .string()
    .max(max)
    .optional()
    .transform((v) => (v ? v : null));
export const connectionSecretsSchema = z
  .object({
    password: secret(1024),
    client_cert: secret(65_536),
    client_key: secret(65_536),
    ca_cert: secret(262_144),
    clear_password: checkbox,
    clear_client_cert: checkbox,
    clear_client_key: checkbox,
    clear_ca_cert: checkbox,
  })
  .transform((s) => ({
    password: s.clear_password ? '' : s.password,
    client_cert: s.clear_client_cert ? '' : s.client_cert,
    client_key: s.clear_client_key ? '' : s.client_key,
    ca_cert: s.clear_ca_cert ? '' : s.ca_cert,
  }));
export type ConnectionSecrets = z.infer<typeof connectionSecretsSchema>;

/** Names of the secret fields: never echoed back to the browser, even on a validation error. */
export const secretFieldNames = ['password', 'client_cert', 'client_key', 'ca_cert'] as const;
