import { spawn } from 'node:child_process';
import { constants } from 'node:os';

const CHILD_MARK = 'BFG_OWN_PROCESS_GROUP';

/**
 * Runs this command again in a process group of its own and relays SIGINT/SIGTERM to it; returns
 * false in that child (which then does the real work), true in the parent once the child exited.
 *
 * Why: Ctrl-C in a terminal signals the whole foreground process group, so Postgres and the
 * dashboard — children spawned by libraries in our group — would get SIGINT at the same moment as
 * we do, and Postgres would shut down under the ingestor before it has written what it received.
 * In a group of their own, they only stop when the ordered shutdown stops them.
 */
export async function relayToOwnProcessGroup(): Promise<boolean> {
  if (process.env[CHILD_MARK] === '1') return false;
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    detached: true,
    stdio: 'inherit',
    env: { ...process.env, [CHILD_MARK]: '1' },
  });
  const relay = (signal: NodeJS.Signals) => {
    child.kill(signal);
  };
  process.on('SIGINT', relay);
  process.on('SIGTERM', relay);
  const code = await new Promise<number>((resolve) => {
    child.once('exit', (exitCode, signal) => resolve(exitCode ?? (signal ? 128 + constants.signals[signal] : 1)));
  });
  process.exitCode = code;
  return true;
}
