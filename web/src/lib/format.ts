const numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });

/** A reading with its unit, or a dash when there is none yet. */
export function formatValue(value: number | null, unit: string | null): string {
  if (value === null) return '—';
  return unit ? `${numberFormat.format(value)} ${unit}` : numberFormat.format(value);
}

// One formatter each, made once: Date#toLocaleString and String#localeCompare with options build
// a new one on every call, which costs milliseconds on a page of 1,000 sensors.
const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  year: 'numeric',
  month: 'numeric',
  day: 'numeric',
  hour: 'numeric',
  minute: 'numeric',
  second: 'numeric',
});
const identCollator = new Intl.Collator(undefined, { numeric: true });

/** A date and time as Date#toLocaleString shows it. */
export function formatDateTime(at: Date): string {
  return dateTimeFormat.format(at);
}

/** Device identifiers in the order people expect (gw-2 before gw-10). */
export function compareIdents(a: string, b: string): number {
  return identCollator.compare(a, b);
}
