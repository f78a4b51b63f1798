/**
 * The id Realtime gives each postgres_changes binding in the join reply: `:erlang.phash2(params)`,
 * an integer in 1..2^27−1 that is the same for the same params on every rejoin. The client only
 * needs it to be deterministic, truthy and echoed in each change's `ids`, so a 32-bit FNV-1a of the
 * params' canonical JSON stands in for Erlang's term hash.
 */
export function bindingId(params: Record<string, unknown>): number {
  const text = JSON.stringify(
    Object.keys(params)
      .sort()
      .map((key) => [key, params[key]]),
  );
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return (hash % (2 ** 27 - 1)) + 1;
}
