import { describe, expect, it } from 'vitest';
import { bindingMatches, parseFilter } from '../../supabase/local/src/realtime/filters.ts';

/** postgres_changes binding matching: event, schema/table wildcards and the filter operators. */

const row = { id: 5, name: 'red', active: true, ts: '2026-11-27T10:00:00+00:00' };
const matches = (filter: string, event = '*', type: 'INSERT' | 'UPDATE' | 'DELETE' = 'INSERT') =>
  bindingMatches({ id: 1, event, schema: 'public', table: 't', filter }, 'public', 't', type, row);

describe('postgres_changes filters', () => {
  it.each([
    ['id=eq.5', true], ['id=eq.6', false], ['id=neq.6', true], ['id=neq.5', false],
    ['id=lt.6', true], ['id=lt.5', false], ['id=lte.5', true], ['id=gt.4', true], ['id=gt.5', false], ['id=gte.5', true],
    ['name=in.(blue,red)', true], ['name=in.(blue,green)', false], ['id=in.(1,5)', true],
    ['name=eq.red', true], ['active=eq.true', true], ['missing=eq.1', false],
  ])('%s → %s', (filter, expected) => {
    expect(matches(filter)).toBe(expected);
  });

  it('matches events case-insensitively, and schema/table wildcards', () => {
    expect(matches('', 'insert')).toBe(true);
    expect(matches('', 'UPDATE')).toBe(false);
    expect(bindingMatches({ id: 1, event: '*', schema: '*' }, 'other', 'x', 'DELETE', row)).toBe(true);
    expect(bindingMatches({ id: 1, event: '*', table: 't' }, 'public', 't', 'UPDATE', row)).toBe(true);
    expect(bindingMatches({ id: 1, event: '*', table: 't' }, 'private', 't', 'UPDATE', row)).toBe(false);
  });

  it('rejects malformed filters and `in` lists over 100 values', () => {
    expect(parseFilter('id=like.5')).toBeUndefined();
    expect(parseFilter('undefined')).toBeUndefined();
    expect(parseFilter(`id=in.(${Array.from({ length: 101 }, (_, i) => i).join(',')})`)).toBeUndefined();
    expect(parseFilter('  ')).toBeNull();
    expect(matches('id=like.5')).toBe(false);
  });
});
