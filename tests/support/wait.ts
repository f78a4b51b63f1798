/**
 * A queue of values pushed by a callback (a LISTEN handler, an event) that a test awaits in order:
 * `next()` resolves with the next value, or rejects after `timeoutMs` naming what it waited for.
 */
export class Inbox<T> {
  private readonly items: T[] = [];
  private readonly waiters: ((item: T) => void)[] = [];

  push = (item: T): void => {
    const waiter = this.waiters.shift();
    if (waiter) waiter(item);
    else this.items.push(item);
  };

  next(what: string, timeoutMs = 5_000): Promise<T> {
    const item = this.items.shift();
    if (item !== undefined) return Promise.resolve(item);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(onItem), 1);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const onItem = (value: T) => {
        clearTimeout(timer);
        resolve(value);
      };
      this.waiters.push(onItem);
    });
  }
}
