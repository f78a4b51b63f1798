/** One postgres_changes binding as the client sent it (echoed back with its id). */
export interface Binding {
  id: number;
  event: string;
  schema?: string;
  table?: string;
  filter?: string;
}

export type ChangeType = 'INSERT' | 'UPDATE' | 'DELETE';

export const FILTER_OPS = ['eq', 'neq', 'lt', 'lte', 'gt', 'gte', 'in'] as const;
export type FilterOp = (typeof FILTER_OPS)[number];

export interface Filter {
  column: string;
  op: FilterOp;
  values: string[];
}

/** Realtime's limit on the values of an `in` filter. */
export const MAX_IN_VALUES = 100;

/**
 * `column=op.value` (ops eq neq lt lte gt gte in; `in.(a,b)`), as Realtime parses them. Returns
 * null for no filter, or the reason it is malformed, in the words of Realtime's parse error
 * (`Error parsing \`filter\` params: <reason>`). The 2026 operators (like, ilike, is, not., AND)
 * are not implemented and count as malformed.
 */
export function parseFilter(text: string | undefined): Filter | null | { error: string } {
  if (text === undefined || text.trim() === '') return null;
  const eq = text.indexOf('=');
  if (eq < 0) return { error: `[${JSON.stringify(text)}]` };
  const column = text.slice(0, eq);
  const rest = text.slice(eq + 1);
  const dot = rest.indexOf('.');
  if (dot < 0) return { error: `[${JSON.stringify(rest)}]` };
  const op = rest.slice(0, dot);
  const raw = rest.slice(dot + 1);
  if (!(FILTER_OPS as readonly string[]).includes(op))
    return { error: `[${JSON.stringify(op)}, ${JSON.stringify(raw)}]` };
  if (op === 'in') {
    const list = /^\((.*)\)$/s.exec(raw);
    if (!list) return { error: '`in` filter value must be wrapped by parentheses' };
    const values = list[1]!.split(',').map((v) => v.trim());
    if (values.length > MAX_IN_VALUES) return { error: `too many values for \`in\` filter. Maximum ${MAX_IN_VALUES}` };
    return { column, op: 'in', values };
  }
  return { column, op: op as FilterOp, values: [raw] };
}

/**
 * A time as Postgres reads it in a UTC session (Supabase's database time zone): text without a
 * zone (a `timestamp` value, or a filter value) is UTC, not the server's local time.
 */
function instant(text: string): number {
  const t = text.trim().replace(' ', 'T');
  const zone = /(Z|([+-])(\d\d):?(\d\d)?)$/i.exec(t);
  if (!t.includes('T')) return Date.parse(t);
  if (!zone) return Date.parse(`${t}Z`);
  if (zone[1]!.toUpperCase() === 'Z') return Date.parse(t);
  // Postgres writes offsets as ±HH or ±HH:MM; Date.parse wants ±HH:MM.
  return Date.parse(`${t.slice(0, zone.index)}${zone[2]}${zone[3]}:${zone[4] ?? '00'}`);
}

const NUMERIC = new Set(['int2', 'int4', 'int8', 'float4', 'float8', 'numeric', 'oid']);
const TEMPORAL = new Set(['timestamptz', 'timestamp', 'date']);

/**
 * Does a row pass the filter? `value` is the column's JSON value (as sent in `record`), compared
 * by the column's type the way Postgres compares it after casting the filter value: numbers as
 * numbers, times as instants, booleans as booleans, the rest as text. NULL passes nothing.
 */
export function passesFilter(value: unknown, type: string, filter: Filter): boolean {
  if (value === null || value === undefined) return false;
  const cmp = (other: string): number | null => {
    if (NUMERIC.has(type)) {
      const a = Number(value);
      const b = Number(other);
      return Number.isNaN(a) || Number.isNaN(b) ? null : a - b;
    }
    if (TEMPORAL.has(type)) {
      const a = typeof value === 'string' ? instant(value) : NaN;
      const b = instant(other);
      return Number.isNaN(a) || Number.isNaN(b) ? null : a - b;
    }
    if (type === 'bool') {
      const b = ['t', 'true', 'y', 'yes', 'on', '1'].includes(other.toLowerCase());
      return value === b ? 0 : value ? 1 : -1;
    }
    const text = typeof value === 'string' ? value : JSON.stringify(value);
    return text < other ? -1 : text > other ? 1 : 0;
  };
  const first = cmp(filter.values[0]!);
  switch (filter.op) {
    case 'eq':
      return first === 0;
    case 'neq':
      return first !== null && first !== 0;
    case 'lt':
      return first !== null && first < 0;
    case 'lte':
      return first !== null && first <= 0;
    case 'gt':
      return first !== null && first > 0;
    case 'gte':
      return first !== null && first >= 0;
    case 'in':
      return filter.values.some((v) => cmp(v) === 0);
  }
}
