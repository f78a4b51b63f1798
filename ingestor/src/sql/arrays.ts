/**
 * How batches reach Postgres. postgres.js serializes an array parameter by the type the server
 * infers for it, and does so badly for NULLs in text arrays (sent as the string "NULL") and for
 * booleans (anything but `true` becomes false). So:
 *  - rows with nullable text or boolean columns go as one JSON document (`jsonb_to_recordset`),
 *    which keeps every NULL and boolean exact;
 *  - the hot path (readings) goes as array literals built here (`arrayLiteral`) of elements that
 *    never need quoting: ids, numbers (epoch ms, values) and NULL (covered by the ingestor tests).
 */
/** Readings' quality as a small integer (NULL-safe in numeric arrays), decoded in SQL. */
export const QUALITY_CODES = { good: 1, suspect: 2, bad: 3 } as const;

/**
 * A Postgres array literal (`{1,2.5,NULL}`), sent as one text parameter and cast in SQL
 * (`${arrayLiteral(ids)}::bigint[]`). One join instead of postgres.js' escaping of each element:
 * a batch's readings are 20,000-element arrays. Only for elements without commas, braces,
 * quotes, backslashes or spaces — bigint ids as strings, finite numbers (JavaScript's `String(n)`) —
 * which Postgres reads unquoted; `null` becomes NULL.
 */
export function arrayLiteral(values: readonly (string | number | null)[]): string {
  return `{${values.map((v) => (v === null ? 'NULL' : v)).join(',')}}`;
}

/** `arrayLiteral` of finite numbers with NaN for NULL (ReadingColumns.values). */
export function floatArrayLiteral(values: readonly number[]): string {
  return `{${values.map((v) => (Number.isNaN(v) ? 'NULL' : v)).join(',')}}`;
}
