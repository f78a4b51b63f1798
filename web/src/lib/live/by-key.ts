/** Rows indexed by key; replaced (not mutated) per batch so Svelte sees one change. */
export function indexBy<K, T>(rows: readonly T[], key: (row: T) => K): Map<K, T> {
  return new Map(rows.map((row) => [key(row), row]));
}

/** A copy of `map` with `rows` upserted and `removed` deleted. */
export function withChanges<K, T>(
  map: ReadonlyMap<K, T>,
  key: (row: T) => K,
  rows: readonly T[],
  removed: readonly K[] = [],
): Map<K, T> {
  const next = new Map(map);
  for (const row of rows) next.set(key(row), row);
  for (const k of removed) next.delete(k);
  return next;
}

/**
 * `withChanges` for several changes at once, applied in order (a later part's row or removal wins),
 * into one new map; `map` itself when no part has anything, so Svelte sees no change.
 */
export function withParts<K, T>(
  map: Map<K, T>,
  key: (row: T) => K,
  parts: readonly { rows: readonly T[]; removed: readonly K[] }[],
): Map<K, T> {
  if (parts.every((p) => p.rows.length === 0 && p.removed.length === 0)) return map;
  const next = new Map(map);
  for (const part of parts) {
    for (const row of part.rows) next.set(key(row), row);
    for (const k of part.removed) next.delete(k);
  }
  return next;
}
