/**
 * How batches reach Postgres. postgres.js serializes an array parameter by the type the server
 * infers for it, and does so badly for NULLs in text arrays (sent as the string "NULL") and for
 * booleans (anything but `true` becomes false). So:
 *  - rows with nullable text or boolean columns go as one JSON document (`jsonb_to_recordset`),
 *    which keeps every NULL and boolean exact;
 *  - the hot path (readings) uses `unnest` over arrays that are never NULL or are numeric, which
 *    postgres.js sends faithfully (covered by the ingestor tests).
 */
/** Readings' quality as a small integer (NULL-safe in numeric arrays), decoded in SQL. */
export const QUALITY_CODES = { good: 1, suspect: 2, bad: 3 } as const;
