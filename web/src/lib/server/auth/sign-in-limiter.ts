/**
 * Slows password guessing: after MAX_FAILURES failed sign-ins for one e-mail address or from one
 * client address within WINDOW_MS, further attempts are refused until the window has passed. In
 * memory, per process — enough for one dashboard instance; several instances each count their own.
 */
const MAX_FAILURES = 10;
const WINDOW_MS = 15 * 60_000;

const failures = new Map<string, number[]>();

function recent(key: string, now: number): number[] {
  const kept = (failures.get(key) ?? []).filter((at) => now - at < WINDOW_MS);
  if (kept.length === 0) failures.delete(key);
  else failures.set(key, kept);
  return kept;
}

/** Minutes until `email` / `client` may try again, or 0 when they may now. */
export function signInBlockedFor(email: string, client: string, now = Date.now()): number {
  const blocked = [`e:${email.toLowerCase()}`, `c:${client}`]
    .map((key) => recent(key, now))
    .filter((list) => list.length >= MAX_FAILURES)
    .map((list) => list[0]! + WINDOW_MS - now);
  return blocked.length === 0 ? 0 : Math.ceil(Math.max(...blocked) / 60_000);
}

export function recordSignInFailure(email: string, client: string, now = Date.now()): void {
  for (const key of [`e:${email.toLowerCase()}`, `c:${client}`]) failures.set(key, [...recent(key, now), now]);
}
