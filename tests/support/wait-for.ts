/**
 * Waits until `probe` returns a value that `accept` takes (default: truthy), re-checking every
 * `intervalMs`; rejects with `what` and the last value after `timeoutMs`. This waits on a
 * condition in the system under test (a row appearing, a status changing), never for a fixed time.
 */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T> | T,
  options: { timeoutMs?: number; intervalMs?: number; accept?: (value: T) => boolean } = {},
): Promise<T> {
  const { timeoutMs = 10_000, intervalMs = 25, accept = (value: T) => Boolean(value) } = options;
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  let lastError: unknown;
  for (;;) {
    try {
      last = await probe();
      if (accept(last)) return last;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const detail = lastError
        ? ` (last error: ${lastError instanceof Error ? lastError.message : JSON.stringify(lastError)})`
        : ` (last value: ${JSON.stringify(last)})`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
