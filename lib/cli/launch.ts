// `pirl train --nproc N`: N local ranks of one data-parallel run, started as torchrun would start
// them (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR) with a file rendezvous, so that nothing
// listens on the network; the first rank to fail stops the others (SIGTERM, then SIGKILL after a grace
// period, as torchrun), and its exit code is the run's. Ctrl-C, SIGTERM and SIGHUP reach every rank, which stop
// together after the step in progress (rank 0 checkpoints); so does the launcher's own end (its IPC
// channel closes), so that no rank trains on orphaned.
import { spawn, type ChildProcess } from 'child_process';
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';

import { QUIT_SIGNALS, handleSignals } from './quit';

/**
 * A rank's failure, told to its launcher (`pirl train --nproc`), which says each failure once: ranks fail
 * alike on the same flags. True when the launcher says it (rank 0 prints its own).
 */
export async function tellLauncher(message: string): Promise<boolean> {
  const send = process.send?.bind(process);
  if (process.env.PIRL_LAUNCHED !== '1' || !send || !process.connected) return false;
  // Not heard (the launcher ended meanwhile): the rank says it itself.
  const heard = await new Promise<boolean>((resolve) => send({ failure: message }, undefined, undefined, (err) => resolve(!err)));
  return heard && process.env.RANK !== '0';
}

// A rank's exit after a signal it heard: a stop after its step (130, 143, 129 as pirl train exits then), not a failure.
const stoppedInOrder = (code: number, signal: NodeJS.Signals | null) =>
  signal === null && QUIT_SIGNALS.some((s) => code === 128 + os.constants.signals[s]);

/** How long ranks told to stop (another one failed) may take before they are killed: torchrun's grace period. */
const KILL_AFTER_MS = 30_000;

/** The launcher's temporary folder (of the ranks' rendezvous file) is named so. */
export const LAUNCH_FOLDER_PREFIX = 'pirl-ranks-';

/** Runs `pirl <args>` as `nproc` ranks (each takes its share of the cores, or its --threads); resolves to the exit code. */
export async function launchLocalRanks(nproc: number, args: string[]): Promise<number> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), LAUNCH_FOLDER_PREFIX));
  const children: ChildProcess[] = [];
  let failed: { rank: number; code: number; signal: NodeJS.Signals | null } | null = null;
  const failures = new Map<number, string>(); // each rank's message (tellLauncher)
  const ends: Array<{ code: number; signal: NodeJS.Signals | null }> = [];
  // Another rank's message is said once rank 0 has said its own or ended (it prints its own: often the same).
  const said = new Set<string>(), waiting: Array<[number, string]> = [];
  let rank0Said = false;
  const sayWaiting = () => {
    if (!rank0Said) return;
    for (const [rank, message] of waiting.splice(0)) {
      if (!said.has(message)) console.error(message.replace(/^pirl: /, `pirl: rank ${rank}: `));
      said.add(message);
    }
  };
  const running = () => children.filter((c) => c.exitCode === null && c.signalCode === null);
  const stopAll = (signal: NodeJS.Signals) => running().forEach((c) => c.kill(signal));
  let interrupted = false;
  const restoreSignals = handleSignals((signal) => {
    interrupted = true;
    stopAll(signal);
  });
  try {
    const exits = Array.from({ length: nproc }, (_, rank) => {
      const child = spawn(process.execPath, [path.join(__dirname, '..', 'cli.js'), ...args], {
        // Rank 0 reports; the others only speak when something goes wrong.
        stdio: ['ignore', rank === 0 ? 'inherit' : 'ignore', 'inherit', 'ipc'],
        env: {
          ...process.env, RANK: String(rank), LOCAL_RANK: String(rank), WORLD_SIZE: String(nproc), LOCAL_WORLD_SIZE: String(nproc),
          MASTER_ADDR: '127.0.0.1', PIRL_STORE_FILE: path.join(dir, 'rendezvous'), PIRL_LAUNCHED: '1',
        },
      });
      children.push(child);
      child.on('message', (m: { failure?: unknown }) => {
        if (typeof m?.failure !== 'string') return;
        failures.set(rank, m.failure);
        if (rank === 0) {
          said.add(m.failure);
          rank0Said = true;
        } else {
          waiting.push([rank, m.failure]);
        }
        sayWaiting();
      });
      return new Promise<number>((resolve) => {
        const failedWith = (status: number, signal: NodeJS.Signals | null = null) => {
          if (status !== 0 && failed === null) {
            failed = { rank, code: status, signal };
            if (!interrupted) {
              // A rank stopped by a signal of its own stopped after its step, the others with it (their vote): they are
              // only told to, after a grace period, should they not end (it quit before training). A failed rank's peers
              // stop after their step (a collective with it fails them sooner); then at once.
              const grace = stoppedInOrder(status, signal) ? KILL_AFTER_MS : 0;
              setTimeout(() => stopAll('SIGTERM'), grace).unref();
              setTimeout(() => stopAll('SIGKILL'), grace + KILL_AFTER_MS).unref();
            }
          }
          ends[rank] = { code: status, signal };
          resolve(status);
        };
        child.on('error', (err) => {
          console.error(`pirl: rank ${rank} of ${nproc} could not start: ${err.message}`);
          failedWith(1);
        });
        // 'close': after its IPC channel too, so that every message it sent was heard.
        child.on('close', (code, signal) => {
          if (rank === 0) rank0Said = true;
          sayWaiting();
          failedWith(code ?? (signal ? 128 + (os.constants.signals[signal] ?? 0) : 1), code === null ? signal : null);
        });
      });
    });
    await Promise.all(exits);
    const first = failed as { rank: number; code: number; signal: NodeJS.Signals | null } | null;
    // Every rank failing with one message (a flag's mistake) was said once; else which rank ended the run.
    const alike = failures.size === nproc && new Set(failures.values()).size === 1;
    // Every rank stopped after its step (one told to by a signal, the others with it): rank 0 said so, and how to resume.
    const inOrder = ends.every((e) => e.code === 0 || stoppedInOrder(e.code, e.signal));
    if (first && !interrupted && !alike && !inOrder) {
      // A rank killed by a signal said nothing itself: name the signal (SIGKILL is most often the kernel's out-of-memory killer).
      const how = first.signal ? `was killed by ${first.signal}${first.signal === 'SIGKILL' ? ' (out of memory? see dmesg)' : ''}, exit code ${first.code}` : `exited with code ${first.code}`;
      console.error(`pirl: rank ${first.rank} of ${nproc} ${how}; the other ranks were stopped`);
    }
    // Stopped in order, the run's code is rank 0's (which said how to resume), not whichever rank ended first.
    return first ? (inOrder ? ends[0].code : first.code) : 0;
  } finally {
    restoreSignals();
    await fs.rm(dir, { recursive: true, force: true });
  }
}
