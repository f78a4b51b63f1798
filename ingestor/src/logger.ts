import path from 'node:path';
import pino, { type Logger } from 'pino';

export type { Logger } from 'pino';

/**
 * Paths pino removes from every log line. Device payloads are never logged as objects, and broker
 * settings are logged through `describeBroker` (no secrets); these catch anything that slips in.
 */
const REDACT = [
  'password',
  '*.password',
  '*.*.password',
  'secret',
  '*.secret',
  'clientKey',
  '*.clientKey',
  'client_key',
  '*.client_key',
  'caCert',
  'clientCert',
  '*.key',
  'databaseUrl',
  'DATABASE_URL',
  '*.DATABASE_URL',
];

/**
 * Called for every line at level error or fatal that carries an `err` — by convention, in the
 * ingestor, an unexpected error (expected trouble, a broker or Postgres being away, is logged at
 * warn, or at error without an `err`). `context` holds the logger's bindings (component,
 * connectionId, …) and the line's other fields.
 */
export type ErrorSink = (err: Error, message: string, context: Record<string, unknown>) => void;

const ERROR_LEVEL = 50;

/** The root logger: JSON lines on stdout; unexpected errors also go to `onError` (Sentry). */
export function createRootLogger(
  level: string,
  bindings: Record<string, unknown>,
  options: { onError?: ErrorSink } = {},
): Logger {
  const { onError } = options;
  return pino({
    level,
    base: bindings,
    redact: { paths: REDACT, censor: '[redacted]' },
    ...(onError && {
      hooks: {
        logMethod(args, method, methodLevel) {
          const [fields, message] = args;
          if (methodLevel >= ERROR_LEVEL && typeof fields === 'object' && fields !== null) {
            const { err, ...rest } = fields as Record<string, unknown>;
            if (err instanceof Error)
              onError(err, typeof message === 'string' ? message : err.message, { ...this.bindings(), ...rest });
          }
          method.apply(this, args);
        },
      },
    }),
  });
}

/**
 * A logger writing to its own rotated file under `dir` (daily and at 10 MB, 14 files kept), in a
 * worker thread so slow disks never stall ingestion.
 */
export function createFileLogger(dir: string, name: string, level: string): Logger {
  const transport = pino.transport({
    target: 'pino-roll',
    options: {
      file: path.join(dir, name),
      frequency: 'daily',
      size: '10m',
      mkdir: true,
      limit: { count: 14 },
      extension: '.log',
    },
  });
  return pino({ level, redact: { paths: REDACT, censor: '[redacted]' } }, transport);
}

/** Flushes a file logger's transport (called at shutdown so the last lines reach the file). */
export function flushLogger(logger: Logger): Promise<void> {
  return new Promise((resolve) => logger.flush(() => resolve()));
}
