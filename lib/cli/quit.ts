// How a signal ends a `pirl` command: by default at once, saying so, with what must run at exit done first;
// a command with work worth saving (train) hears the signals itself.
import * as os from 'os';

import { runExitActions } from '../exitActions';

export const QUIT_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
export type QuitSignal = (typeof QUIT_SIGNALS)[number];

/** What each signal says happened to the command. */
export const SIGNAL_CAUSES: Readonly<Record<QuitSignal, string>> = {
  SIGINT: 'interrupted',
  SIGTERM: 'terminated (SIGTERM)',
  SIGHUP: 'its terminal closed (SIGHUP)',
};

/**
 * Quits at once, as the signal's default would: process.exit() would first wait for native work in flight (a
 * rendezvous waits up to the group's timeout), so the signal is raised again with no handler; as a container's
 * PID 1 the kernel ignores that, and then it exits anyway. What must run at exit runs first (locks freed,
 * temporary files removed: a lock left behind made the next run wait for its holder's death to be noticed).
 */
export function quit(signal: QuitSignal): void {
  process.removeAllListeners(signal);
  runExitActions();
  process.kill(process.pid, signal);
  setImmediate(() => process.exit(128 + os.constants.signals[signal]));
}

// What a quit now would leave for the next command to continue (a decode cache's build), said as it quits.
let kept: string | null = null;
export function keptOnQuit(what: string | null): void {
  kept = what;
}
export const keptNote = (): string => (kept === null ? '' : ` (${kept})`);

// After a progress line: on a line of its own. Of a data-parallel run's ranks, rank 0 alone says it (all heard it).
const sayAndQuit = (signal: QuitSignal) => {
  if (!(Number(process.env.RANK) > 0)) process.stderr.write(`\npirl: ${SIGNAL_CAUSES[signal]}${keptNote()}\n`);
  quit(signal);
};

let handling: ((signal: QuitSignal) => void) | null = null;

/**
 * From now `handler` hears the quit signals, in place of the handler before it (at first, quitOnSignals' default);
 * the returned function puts the default back.
 */
export function handleSignals(handler: (signal: QuitSignal) => void): () => void {
  for (const signal of QUIT_SIGNALS) {
    if (handling) process.off(signal, handling);
    process.on(signal, handler);
  }
  handling = handler;
  return () => void handleSignals(sayAndQuit);
}

/** A signal says the command was interrupted, and quits (see quit), until a command handles the signals itself. */
export function quitOnSignals(): void {
  handleSignals(sayAndQuit);
}
