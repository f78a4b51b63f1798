/**
 * GoTrue's `ban_duration` is a Go duration string (time.ParseDuration: "24h", "1h30m", "100ms")
 * or "none". Go's parser is small enough to copy; no npm package parses exactly its syntax.
 * Returns milliseconds, or null when the text is not a Go duration.
 */
const UNIT_MS: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export function parseGoDuration(text: string): number | null {
  const match = /^([-+]?)((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+$/.exec(text);
  if (!match) return text === '0' ? 0 : null;
  let total = 0;
  for (const [, value, unit] of text.matchAll(/(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/g))
    total += Number(value) * UNIT_MS[unit!]!;
  return match[1] === '-' ? -total : total;
}
