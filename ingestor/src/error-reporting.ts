import type { ErrorSink } from './logger.ts';

export interface ErrorReporting {
  /** Sends an error that the ingestor logged at level error (see ErrorSink). */
  capture: ErrorSink;
  /** Sends what is still queued, waiting at most `timeoutMs`, and stops reporting. */
  close(timeoutMs: number): Promise<void>;
}

/** Context keys sent as Sentry tags (searchable); other primitive fields go as extra data. */
const TAG_KEYS = new Set(['component', 'connectionId', 'service', 'instance']);

/**
 * Sentry for the ingestor process, when `SENTRY_DSN` is set (undefined otherwise; @sentry/node is
 * then not even loaded). Besides the errors passed to `capture`, the SDK's default integrations
 * report uncaught exceptions and, in strict mode, unhandled rejections — both then end the process
 * with exit code 1, as Node does without Sentry. No tracing, no PII (no request data, no user).
 */
export async function startErrorReporting(options: {
  dsn: string | undefined;
  environment: string | undefined;
  serverName: string;
}): Promise<ErrorReporting | undefined> {
  if (!options.dsn) return undefined;
  const Sentry = await import('@sentry/node');
  Sentry.init({
    dsn: options.dsn,
    ...(options.environment && { environment: options.environment }),
    serverName: options.serverName,
    sendDefaultPii: false,
    // tracesSampleRate left unset: no spans, and no performance instrumentation is installed.
    integrations: [Sentry.onUnhandledRejectionIntegration({ mode: 'strict' })],
  });
  return {
    capture(err, message, context) {
      const tags: Record<string, string> = {};
      const extra: Record<string, unknown> = { logMessage: message };
      for (const [key, value] of Object.entries(context)) {
        if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') continue;
        if (TAG_KEYS.has(key)) tags[key] = String(value);
        else extra[key] = value;
      }
      Sentry.captureException(err, { tags, extra });
    },
    async close(timeoutMs) {
      await Sentry.close(timeoutMs);
    },
  };
}
