/**
 * Calls `fn` at most once per `ms`; calls in between are merged into one. By default the first call
 * runs after `ms` (for coarse refreshes, such as re-counting a site's devices, driven by high-rate
 * events). With `leading`, a call after a quiet `ms` runs at once and only the calls that follow it
 * wait (a page reloading its view on a nudge shows a lone change without delay).
 */
export function throttle(
  fn: () => unknown,
  ms: number,
  options: { leading?: boolean } = {},
): { (): void; cancel(): void } {
  let timer: ReturnType<typeof setTimeout> | null = null;
  let lastRun = -Infinity;
  const run = () => {
    timer = null;
    lastRun = Date.now();
    void fn();
  };
  const call = () => {
    if (timer) return;
    const wait = options.leading ? lastRun + ms - Date.now() : ms;
    if (wait <= 0) run();
    else timer = setTimeout(run, wait);
  };
  call.cancel = () => {
    if (timer) clearTimeout(timer);
    timer = null;
  };
  return call;
}
