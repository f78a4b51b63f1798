// When a device counts as stale: one rule, used by the server's counts (as SQL parameters) and by
// the page's clock, so a device turns stale on screen when the Sites page would count it so.

/** Gateways publish status on change (retained, with a last will); their other messages refresh last_seen_at. */
export const GATEWAY_STALE_AFTER_S = 300;
/** A datalogger or sensor is stale after this many of its reporting intervals without data. */
export const MISSED_INTERVALS = 3;
/** Interval assumed for dataloggers that never announced one. */
export const DEFAULT_INTERVAL_S = 60;

export type DeviceState = 'online' | 'stale' | 'offline';

function ageS(at: Date | null, now: number): number {
  return at ? (now - at.getTime()) / 1000 : Number.POSITIVE_INFINITY;
}

export function gatewayState(g: { online: boolean | null; last_seen_at: Date }, now: number): DeviceState {
  if (g.online === false) return 'offline';
  return ageS(g.last_seen_at, now) > GATEWAY_STALE_AFTER_S ? 'stale' : 'online';
}

export function staleAfterS(intervalS: number | null): number {
  return MISSED_INTERVALS * (intervalS ?? DEFAULT_INTERVAL_S);
}

export function dataloggerState(d: { last_seen_at: Date; interval_s: number | null }, now: number): DeviceState {
  return ageS(d.last_seen_at, now) > staleAfterS(d.interval_s) ? 'stale' : 'online';
}

export function sensorState(s: { last_value_at: Date | null }, intervalS: number | null, now: number): DeviceState {
  return ageS(s.last_value_at, now) > staleAfterS(intervalS) ? 'stale' : 'online';
}
