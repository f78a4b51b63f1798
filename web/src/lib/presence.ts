import type { DevicePresence } from '@bfg/ingestor/vocabulary';

// What a device's badge says, from what the database holds: `presence` is written by the
// staleness job (offline when a device stopped reporting within its expected interval) and by the
// ingestor's write path (online with its next message). The dashboard computes no staleness of
// its own; this file is the one place that turns rows into the word shown, for the site page's
// live rows and the Sites page's counts alike.

/** What the dashboard shows for a device. */
export type DeviceState = DevicePresence;

/**
 * A gateway is offline when it said so itself (`online` false: its status message or its last
 * will) or when it stopped reporting (`presence`).
 */
export function gatewayState(g: { online: boolean | null; presence: DevicePresence }): DeviceState {
  return g.online === false || g.presence === 'offline' ? 'offline' : 'online';
}

/** A datalogger or a sensor is what its presence says. */
export function deviceState(d: { presence: DevicePresence }): DeviceState {
  return d.presence;
}
