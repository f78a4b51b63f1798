import type { ConnectionStatus } from './rows.ts';

export type Tone = 'ok' | 'warn' | 'bad' | 'idle' | 'pending';

export interface ConnectionLabel {
  text: string;
  tone: Tone;
}

/**
 * The label of a connection from its desired state (is_active) and what the ingestor reports
 * (status): a Start or Stop — from this page, Studio or SQL — shows as pending until the ingestor
 * confirms it, or as an error with its reason.
 */
export function connectionLabel(c: { is_active: boolean; status: ConnectionStatus }): ConnectionLabel {
  if (c.is_active) {
    switch (c.status) {
      case 'connected':
        return { text: 'Connected', tone: 'ok' };
      case 'error':
        return { text: 'Error', tone: 'bad' };
      case 'reconnecting':
        return { text: 'Reconnecting…', tone: 'warn' };
      case 'connecting':
        return { text: 'Connecting…', tone: 'pending' };
      default:
        return { text: 'Starting…', tone: 'pending' };
    }
  }
  if (c.status === 'connected' || c.status === 'connecting' || c.status === 'reconnecting')
    return { text: 'Stopping…', tone: 'pending' };
  return { text: 'Stopped', tone: 'idle' };
}
