export interface LocalStackErrorOptions extends ErrorOptions {
  /** Lines that help diagnose it (e.g. the last lines a server logged), shown before the message. */
  details?: readonly string[];
}

/**
 * A problem the operator can fix (a taken port, an unusable data directory, a bad variable). Its
 * message says what failed and what to do, on one line where it can; the CLI prints the details,
 * then the message, without a stack trace.
 */
export class LocalStackError extends Error {
  override name = 'LocalStackError';
  readonly details: readonly string[];

  constructor(message: string, options: LocalStackErrorOptions = {}) {
    super(message, options);
    this.details = options.details ?? [];
  }
}

/** Turns any thrown value into an Error: written once, in the ingestor's declared exports. */
export { coerceError } from '@bfg/ingestor';
