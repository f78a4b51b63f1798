import { createSubscriber } from 'svelte/reactivity';

/**
 * A shared "now" for relative times ("2 min ago"). It ticks only while something on the page
 * reads it, so a page with no times on it runs no timer. (Whether a device is online is not a
 * matter of the clock: the database says so, see presence.ts.)
 */
class Clock {
  #now = Date.now();
  #subscribe = createSubscriber((update) => {
    const timer = setInterval(() => {
      this.#now = Date.now();
      update();
    }, 5000);
    return () => clearInterval(timer);
  });

  get now(): number {
    this.#subscribe();
    return this.#now;
  }
}

export const clock = new Clock();
