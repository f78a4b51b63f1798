import { z } from 'zod';
import { DebouncedLookup } from './debounced-lookup.svelte.ts';

/** What the preview shows next to a pattern being typed. */
export type ArchivedCountState =
  | { kind: 'idle' }
  | { kind: 'counting' }
  | { kind: 'counted'; count: number }
  | { kind: 'invalid'; message: string }
  | { kind: 'failed'; message: string };

const answer = z.object({ count: z.number().int().nonnegative() });

/**
 * How many archived messages a pattern would replay, asked from /api/archived-count while an
 * admin types: one request after the typing pauses (`debounceMs`), the previous one aborted, so
 * what is shown is always the answer for the pattern in the field.
 */
export class ArchivedCountPreview {
  readonly #lookup: DebouncedLookup<z.infer<typeof answer>>;

  constructor(debounceMs = 300) {
    this.#lookup = new DebouncedLookup(answer, debounceMs);
  }

  get state(): ArchivedCountState {
    const s = this.#lookup.state;
    if (s.kind === 'loading') return { kind: 'counting' };
    if (s.kind === 'done') return { kind: 'counted', count: s.value.count };
    return s;
  }

  /** Asks for `pattern` of `connectionId` once the typing pauses; an empty pattern shows nothing. */
  update(connectionId: number, pattern: string): void {
    const query = new URLSearchParams({ connection_id: String(connectionId), pattern });
    this.#lookup.update(pattern.trim() === '' ? null : `/api/archived-count?${query}`);
  }

  /** Stops the pending request and timer (the field changed again, or the form closed). */
  dispose(): void {
    this.#lookup.dispose();
  }
}
