import path from 'node:path';
import { createRequire } from 'node:module';
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

/** Bytes a file logger holds while its disk is slow, at most; beyond it lines are dropped. */
const FILE_BUFFER_BYTES = 8 * 1024 * 1024;

/** The part of pino-roll's SonicBoom stream a logger uses. */
interface FileStream {
  write(line: string): boolean;
  flush(cb: (err?: Error) => void): void;
  on(event: 'error', listener: (err: Error) => void): void;
}

/** pino-roll (CommonJS, no types): options → its SonicBoom stream, once the file is open. */
const pinoRoll = createRequire(import.meta.url)('pino-roll') as (
  options: Record<string, unknown>,
) => Promise<FileStream>;

/**
 * A logger writing to its own rotated file under `dir` (daily and at 10 MB, 14 files kept). The
 * file is written from this thread, asynchronously (pino-roll's SonicBoom: fs writes on libuv's
 * pool, never waited for), so a slow disk does not stall ingestion; what it holds meanwhile is
 * bounded (FILE_BUFFER_BYTES, then lines are dropped). Not pino.transport: its worker thread cost
 * 22–32 MB of resident memory per file — a sixth of the ingestor's memory budget for two files
 * that get a line per connection event and per aggregated parsing error. The file opens
 * asynchronously; lines logged before are kept and written first.
 */
export function createFileLogger(dir: string, name: string, level: string): Logger {
  const early: string[] = [];
  let stream: FileStream | undefined;
  let failed = false;
  const opened = pinoRoll({
    file: path.join(dir, name),
    frequency: 'daily',
    size: '10m',
    mkdir: true,
    limit: { count: 14 },
    extension: '.log',
    maxLength: FILE_BUFFER_BYTES,
  }).then(
    (roll) => {
      // A write error (disk full) must not end the process: the line is lost, ingestion goes on.
      roll.on('error', (err) => console.error(`cannot write ${path.join(dir, name)}.*.log: ${err.message}`));
      stream = roll;
      for (const line of early.splice(0)) roll.write(line);
    },
    (err: unknown) => {
      failed = true;
      early.length = 0;
      console.error(`cannot write ${path.join(dir, name)}.*.log: ${err instanceof Error ? err.message : String(err)}`);
    },
  );
  const destination = {
    write(line: string): boolean {
      if (stream) return stream.write(line);
      if (!failed && early.length < 1_000) early.push(line);
      return true;
    },
    flush(cb: (err?: Error) => void): void {
      void opened.then(() => (stream ? stream.flush(cb) : cb()));
    },
  };
  return pino({ level, redact: { paths: REDACT, censor: '[redacted]' } }, destination);
}

/** Flushes a file logger (called at shutdown so the last lines reach the file). */
export function flushLogger(logger: Logger): Promise<void> {
  return new Promise((resolve) => logger.flush(() => resolve()));
}
