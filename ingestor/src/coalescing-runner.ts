/**
 * Runs an async task one at a time. A request while it runs does not start a second run in
 * parallel; all such requests are merged into a single follow-up run, which starts as soon as the
 * current one ends (so a change that arrived mid-run is never missed).
 */
export class CoalescingRunner {
  private running: Promise<void> | undefined;
  private again = false;
  private readonly task: () => Promise<void>;

  constructor(task: () => Promise<void>) {
    this.task = task;
  }

  /** Resolves when a run that started after this call has finished. */
  run(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.task();
      } while (this.again);
    })().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /** The run in progress, if any. */
  get current(): Promise<void> | undefined {
    return this.running;
  }
}

/**
 * A CoalescingRunner that also runs every `intervalMs` once started — the shape of every
 * "aggregate in memory, write periodically and on demand, write the rest on stop" component.
 */
export class PeriodicWriter extends CoalescingRunner {
  private timer: NodeJS.Timeout | undefined;
  private readonly intervalMs: number;

  constructor(task: () => Promise<void>, intervalMs: number) {
    super(task);
    this.intervalMs = intervalMs;
  }

  start(): void {
    this.timer = setInterval(() => void this.run(), this.intervalMs);
    this.timer.unref();
  }

  /** Stops the timer and writes what is left. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.run();
  }
}
