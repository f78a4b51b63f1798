const numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });

/** A reading with its unit, or a dash when there is none yet. */
export function formatValue(value: number | null, unit: string | null): string {
  if (value === null) return '—';
  return unit ? `${numberFormat.format(value)} ${unit}` : numberFormat.format(value);
}
