/**
 * Capped exponential backoff with jitter, for reconnecting to brokers and retrying the database.
 *
 * Hand-written because it is one expression: the retry libraries wrap a promise-returning
 * function, while here the retry is a timer owned by a long-lived session. The jitter spreads
 * hundreds of failing brokers over time instead of retrying them all on the same tick (graphile
 * worker uses the same shape: 0.5–1× the exponential delay).
 *
 * Delays for base 250 ms, cap 30 s: ~0.2–0.25, 0.4–0.5, 0.75–1, 1.5–2, 3–4, 6–8, 12–16, 15–30 s, …
 */
export function backoffDelay(
  attempt: number,
  options: { baseMs?: number; maxMs: number; random?: () => number },
): number {
  const base = options.baseMs ?? 250;
  const random = options.random ?? Math.random;
  const exponential = Math.min(options.maxMs, base * 2 ** Math.max(0, attempt));
  const jitter = 0.5 + Math.sqrt(random()) / 2;
  return Math.round(exponential * jitter);
}
