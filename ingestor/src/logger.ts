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

/** The root logger: JSON lines on stdout. */
export function createRootLogger(level: string, bindings: Record<string, unknown>): Logger {
  return pino({ level, base: bindings, redact: { paths: REDACT, censor: '[redacted]' } });
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
