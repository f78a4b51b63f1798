import { z } from 'zod';

/** What the preview shows next to a pattern being typed. */
export type ArchivedCountState =
  | { kind: 'idle' }
  | { kind: 'counting' }
  | { kind: 'counted'; count: number }
  | { kind: 'invalid'; message: string }
  | { kind: 'failed'; message: string };

const answer = z.object({ count: z.number().int().nonnegative() });
const refusal = z.object({ message: z.string() });

/**
 * How many archived messages a pattern would replay, asked from /api/archived-count while an
 * admin types: one request after the typing pauses (`debounceMs`), the previous one aborted, so
 * what is shown is always the answer for the pattern in the field.
 */
export class ArchivedCountPreview {
  state: ArchivedCountState = $state({ kind: 'idle' });
  readonly #debounceMs: number;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #request: AbortController | null = null;

  constructor(debounceMs = 300) {
    this.#debounceMs = debounceMs;
  }

  /** Asks for `pattern` of `connectionId` once the typing pauses; an empty pattern shows nothing. */
  update(connectionId: number, pattern: string): void {
    this.dispose();
    if (pattern.trim() === '') {
      this.state = { kind: 'idle' };
      return;
    }
    this.state = { kind: 'counting' };
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.#ask(connectionId, pattern);
    }, this.#debounceMs);
  }

  /** Stops the pending request and timer (the field changed again, or the form closed). */
  dispose(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#request?.abort();
    this.#request = null;
  }

  async #ask(connectionId: number, pattern: string): Promise<void> {
    const request = new AbortController();
    this.#request = request;
    const query = new URLSearchParams({ connection_id: String(connectionId), pattern });
    try {
      const response = await fetch(`/api/archived-count?${query}`, {
        headers: { accept: 'application/json' },
        signal: request.signal,
      });
      const body: unknown = await response.json().catch(() => null);
      if (request.signal.aborted) return;
      const counted = answer.safeParse(body);
      if (response.ok && counted.success) this.state = { kind: 'counted', count: counted.data.count };
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
