import { describe, expect, it } from 'vitest';
import { parseFilter, passesFilter, type Filter } from '../../supabase/local/src/realtime/filters.ts';

/** postgres_changes filters: Realtime's syntax and error texts, and comparison by column type. */

const filter = (text: string): Filter => {
  const parsed = parseFilter(text);
  if (!parsed || 'error' in parsed) throw new Error(`not a filter: ${text}`);
  return parsed;
};

describe('postgres_changes filters', () => {
  it.each([
    [5, 'int8', 'id=eq.5', true],
    [5, 'int8', 'id=eq.6', false],
    [5, 'int8', 'id=neq.6', true],
    [5, 'int8', 'id=neq.5', false],
    [5, 'int8', 'id=lt.6', true],
    [5, 'int8', 'id=lt.5', false],
    [5, 'int8', 'id=lte.5', true],
    [5, 'int8', 'id=gt.4', true],
    [5, 'int8', 'id=gt.5', false],
    [5, 'int8', 'id=gte.5', true],
    [10, 'int4', 'id=gt.9', true],
    ['red', 'text', 'name=in.(blue,red)', true],
    ['red', 'text', 'name=in.(blue,green)', false],
    [5, 'int8', 'id=in.(1,5)', true],
    ['red', 'text', 'name=eq.red', true],
    [true, 'bool', 'active=eq.true', true],
    [false, 'bool', 'active=eq.t', false],
    ['2026-11-27T10:00:00+00:00', 'timestamptz', 'ts=gt.2026-11-27T09:00:00Z', true],
    ['2026-11-27T10:00:00+00:00', 'timestamptz', 'ts=eq.2026-11-27 11:00:00+01', true],
    [null, 'int8', 'id=eq.5', false],
    [null, 'int8', 'id=neq.5', false],
  ])('%j (%s) with %s → %s', (value, type, text, expected) => {
    expect(passesFilter(value, type, filter(text))).toBe(expected);
  });

  it('refuses what Realtime refuses, with its parse errors', () => {
    expect(parseFilter('subject=foo.hey')).toEqual({ error: '["foo", "hey"]' });
    expect(parseFilter('undefined')).toEqual({ error: '["undefined"]' });
    expect(parseFilter('name=in.red')).toEqual({ error: '`in` filter value must be wrapped by parentheses' });
    expect(parseFilter(`id=in.(${Array.from({ length: 101 }, (_, i) => i).join(',')})`)).toEqual({
      error: 'too many values for `in` filter. Maximum 100',
    });
    expect(parseFilter('  ')).toBeNull();
    expect(parseFilter(undefined)).toBeNull();
  });
});
