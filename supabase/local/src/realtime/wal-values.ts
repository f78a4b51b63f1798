import { parse as parseArray } from 'postgres-array';

/** What the value conversion needs of a type (pg_type): its name, category and array element. */
export interface TypeInfo {
  name: string;
  /** pg_type.typcategory: `A` array, `N` numeric, `B` boolean, … */
  category: string;
  /** Element type of an array type (0 otherwise). */
  elem: number;
}

const NUMBERS = new Set(['int2', 'int4', 'int8', 'float4', 'float8', 'numeric', 'oid']);

/**
 * Turns a value as pgoutput sends it (text) into the JSON Supabase Realtime puts in `record`:
 * `realtime.cast(text, type)`, i.e. `to_jsonb(value::type)` — numbers as JSON numbers (NaN and
 * infinities stay strings, as to_jsonb writes them), booleans, json/jsonb nested, arrays as JSON
 * arrays of converted elements, timestamps in ISO form (`T`, offset `+00:00`; the replication
 * session runs in UTC). Everything else stays text.
 */
export function walValue(text: string, typeOid: number, types: ReadonlyMap<number, TypeInfo>): unknown {
  const type = types.get(typeOid);
  if (!type) return text;
  if (type.category === 'A' && type.elem !== 0) {
    return parseArray(text, (element) => walValue(element, type.elem, types));
  }
  return scalar(text, type.name);
}

function scalar(text: string, type: string): unknown {
  if (NUMBERS.has(type)) {
    const n = Number(text);
    return Number.isFinite(n) ? n : text;
  }
  switch (type) {
    case 'bool':
      return text === 't';
    case 'json':
    case 'jsonb':
      return JSON.parse(text) as unknown;
    case 'timestamptz':
      // "2026-12-01 21:30:00.123456+00" → "2026-12-01T21:30:00.123456+00:00" (to_jsonb's form).
      return text.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00');
    case 'timestamp':
      return text.replace(' ', 'T');
    default:
      return text;
  }
}

/** The `type` Realtime lists in `columns`: pg_type.typname (`int8`, `_text` for text[], …). */
export function typeName(typeOid: number, types: ReadonlyMap<number, TypeInfo>): string {
  return types.get(typeOid)?.name ?? 'text';
}
