import { z } from 'zod';

/** What a lookup made while someone types shows. */
export type LookupState<T> =
  | { kind: 'idle' }
  | { kind: 'loading' }
  | { kind: 'done'; value: T }
  | { kind: 'invalid'; message: string }
  | { kind: 'failed'; message: string };

const refusal = z.object({ message: z.string() });

/**
 * A GET asked while a form is typed in: one request after the typing pauses (`debounceMs`), the
 * previous one aborted, so what is shown is always the answer for what is in the fields. A 400 is
 * `invalid` (the server's words for what is wrong), anything else not OK `failed`.
 */
export class DebouncedLookup<T> {
  state: LookupState<T> = $state({ kind: 'idle' });
  readonly #schema: z.ZodType<T>;
  readonly #debounceMs: number;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #request: AbortController | null = null;

  constructor(schema: z.ZodType<T>, debounceMs = 300) {
    this.#schema = schema;
    this.#debounceMs = debounceMs;
  }

  /** Asks for `url` once the typing pauses; null shows nothing. */
  update(url: string | null): void {
    this.dispose();
    if (url === null) {
      this.state = { kind: 'idle' };
      return;
    }
    this.state = { kind: 'loading' };
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.#ask(url);
    }, this.#debounceMs);
  }

  /** Stops the pending request and timer (the fields changed again, or the form closed). */
  dispose(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#request?.abort();
    this.#request = null;
  }

  async #ask(url: string): Promise<void> {
    const request = new AbortController();
    this.#request = request;
    try {
      const response = await fetch(url, { headers: { accept: 'application/json' }, signal: request.signal });
      const body: unknown = await response.json().catch(() => null);
      if (request.signal.aborted) return;
      const parsed = this.#schema.safeParse(body);
      if (response.ok && parsed.success) this.state = { kind: 'done', value: parsed.data };
      else {
        const message = refusal.safeParse(body).data?.message ?? `The server answered ${response.status}.`;
        this.state = response.status === 400 ? { kind: 'invalid', message } : { kind: 'failed', message };
      }
    } catch (err) {
      if (request.signal.aborted) return;
      this.state = { kind: 'failed', message: err instanceof Error ? err.message : String(err) };
    } finally {
      if (this.#request === request) this.#request = null;
    }
  }
}
