// A lock file between processes of one host or of several (a shared file system), and between the Worker threads of
// one process: it names its holder (host, pid, thread and a token) and is touched while held, so that a lock whose
// holder died is taken over — its process or thread gone on this host, or untouched for a minute anywhere.
import { randomBytes } from 'crypto';
import { promises as fs, rmSync } from 'fs';
import * as os from 'os';
import { threadId } from 'worker_threads';

import { atExit } from './exitActions';
import { holderAlive, sameTask, taskOf, taskTag, thisTask } from './holders';

/** The locks this thread holds (their tokens): one naming this pid and thread but not here is a dead holder's (a container's pids repeat). */
const heldTokens = new Set<string>();
/** A holder touches its lock this often; one untouched for STALE_LOCK_MS lost its holder (another host's too). */
const LOCK_TOUCH_MS = 5_000;
const STALE_LOCK_MS = 60_000;

export interface HeldLock {
  /** Freed (also, by itself, when this process exits or quits holding it). */
  release(): Promise<void>;
}

/** Whether `err` (of takeLock) says its folder cannot be written by this process: a permission or a read-only mount. */
export function unwritable(err: unknown): err is NodeJS.ErrnoException {
  return ['EACCES', 'EPERM', 'EROFS'].includes((err as NodeJS.ErrnoException | null)?.code ?? '');
}

/** `lock` taken (`held`), or who holds it: "HOST pid N", null while its holder has yet to write its name. */
export async function takeLock(lock: string): Promise<{ held: HeldLock } | { holder: string | null }> {
  for (;;) {
    const handle = await fs.open(lock, 'wx').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'EEXIST') return null;
      throw err;
    });
    if (handle) {
      const token = [os.hostname(), process.pid, taskTag(), randomBytes(8).toString('hex')].filter((part) => part !== '').join(' ');
      heldTokens.add(token);
      const touch = setInterval(() => void fs.utimes(lock, new Date(), new Date()).catch(() => undefined), LOCK_TOUCH_MS).unref();
      let released = false;
      const releasing = () => {
        if (released) return false;
        released = true;
        forget();
        clearInterval(touch);
        heldTokens.delete(token);
        return true;
      };
      const held = { release: async () => void (releasing() && (await fs.rm(lock, { force: true }))) };
      const forget = atExit(() => void (releasing() && rmSync(lock, { force: true }))); // a holder that exits or quits (Ctrl-C) leaves no lock
      try {
        await handle.writeFile(token);
      } catch (err) {
        await held.release(); // a nameless lock (a full disk) would hold off every other taker for a minute
        throw err;
      } finally {
        await handle.close();
      }
      return { held };
    }
    const token = await fs.readFile(lock, 'utf8').catch(() => null);
    const age = Date.now() - ((await fs.stat(lock).catch(() => null))?.mtimeMs ?? Date.now());
    const [host, pid, thread] = (token ?? '').split(' ');
    const task = taskOf(thread);
    const mine = Number(pid) === process.pid && (task === null || sameTask(task, thisTask()));
    const deadHere = host === os.hostname() && Number(pid) > 0 && (mine ? !heldTokens.has(token!) : !holderAlive(Number(pid), task));
    if (token !== null && (deadHere || age > STALE_LOCK_MS)) {
      // Only one taker wins the rename; the others see the lock gone, or the winner's, and go round again. A lock
      // moved that is not the one judged dead (freed and taken anew meanwhile) is put back, unless another is there.
      const taken = `${lock}.${process.pid}.${taskTag() || threadId}.${randomBytes(4).toString('hex')}.taken`;
      if (await fs.rename(lock, taken).then(() => true, () => false)) {
        if ((await fs.readFile(taken, 'utf8').catch(() => null)) !== token) await fs.link(taken, lock).catch(() => undefined);
        await fs.rm(taken, { force: true });
      }
      continue;
    }
    if (token === null) continue; // released meanwhile
    return { holder: host && pid ? `${host} pid ${pid}` : null };
  }
}
