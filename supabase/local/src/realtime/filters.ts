/** One postgres_changes binding as the client sent it (echoed back with its id). */
export interface Binding {
  id: number;
  event: string;
  schema?: string;
  table?: string;
  filter?: string;
}

export type ChangeType = 'INSERT' | 'UPDATE' | 'DELETE';

interface Filter {
  column: string;
  op: 'eq' | 'neq' | 'lt' | 'lte' | 'gt' | 'gte' | 'in';
  values: string[];
}

/** `column=op.value` (ops eq neq lt lte gt gte in; `in.(a,b)`), as Realtime parses them; undefined = malformed. */
export function parseFilter(text: string | undefined): Filter | null | undefined {
  if (text === undefined || text.trim() === '') return null;
  const match = /^([^=]+)=(eq|neq|lt|lte|gt|gte|in)\.(.*)$/s.exec(text.trim());
  if (!match) return undefined;
  const [, column, op, raw] = match as unknown as [string, string, Filter['op'], string];
  if (op === 'in') {
    const list = /^\((.*)\)$/s.exec(raw);
    if (!list) return undefined;
    const values = list[1]!.split(',').map((v) => v.trim());
    return values.length > 100 ? undefined : { column, op, values };
  }
  return { column, op, values: [raw] };
}

/** Does a binding want this change of schema.table (event, schema, table and filter)? */
export function bindingMatches(binding: Binding, schema: string, table: string, type: ChangeType, row: Record<string, unknown> | null): boolean {
  const event = binding.event.toUpperCase();
  if (event !== '*' && event !== type) return false;
  const bindingSchema = binding.schema ?? 'public';
  if (bindingSchema !== '*' && bindingSchema !== schema) return false;
  if (binding.table !== undefined && binding.table !== '*' && binding.table !== table) return false;
  const filter = parseFilter(binding.filter);
  if (filter === null) return true;
  if (filter === undefined || !row || !(filter.column in row)) return false;
  return compare(row[filter.column], filter);
}

function compare(value: unknown, filter: Filter): boolean {
  if (value === null || value === undefined) return false;
  const text = value instanceof Date ? value.toISOString()
    : typeof value === 'string' ? value
    : typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint' ? value.toString()
    : JSON.stringify(value);
  const numeric = typeof value === 'number' || (typeof value === 'string' && value.trim() !== '' && !Number.isNaN(Number(value)));
  const cmp = (other: string): number => {
    if (numeric && other.trim() !== '' && !Number.isNaN(Number(other))) return Number(text) - Number(other);
    if (value instanceof Date) return value.getTime() - Date.parse(other);
    if (typeof value === 'boolean') return text === (other === 't' ? 'true' : other === 'f' ? 'false' : other) ? 0 : 1;
    return text < other ? -1 : text > other ? 1 : 0;
  };
  switch (filter.op) {
    case 'eq': return cmp(filter.values[0]!) === 0;
    case 'neq': return cmp(filter.values[0]!) !== 0;
    case 'lt': return cmp(filter.values[0]!) < 0;
    case 'lte': return cmp(filter.values[0]!) <= 0;
    case 'gt': return cmp(filter.values[0]!) > 0;
    case 'gte': return cmp(filter.values[0]!) >= 0;
    case 'in': return filter.values.some((v) => cmp(v) === 0);
  }
}
