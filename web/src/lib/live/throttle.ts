/**
 * Calls `fn` at most once per `ms`: the first call runs after `ms`, calls in between are merged
 * into it. For coarse refreshes (re-counting a site's devices) driven by high-rate events.
 */
export function throttle(fn: () => unknown, ms: number): { (): void; cancel(): void } {
  let timer: ReturnType<typeof setTimeout> | null = null;
  const call = () => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      void fn();
    }, ms);
  };
  call.cancel = () => {
    if (timer) clearTimeout(timer);
    timer = null;
  };
  return call;
}
