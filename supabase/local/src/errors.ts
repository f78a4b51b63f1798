/**
 * A problem the operator can fix (a taken port, an unusable data directory, a bad variable).
 * The CLI prints its message alone, without a stack trace.
 */
export class LocalStackError extends Error {
  override name = 'LocalStackError';
}

/** Turns any thrown value into an Error (a rejected promise may carry anything). */
export function coerceError(value: unknown): Error {
  if (value instanceof Error) return value;
  return new Error(typeof value === 'string' ? value : `Non-error thrown: ${String(value)}`);
}
