// Who holds a lock file or writes a temporary file: a process and, since Worker threads share its pid, the thread in
// it — named by its kernel task (/proc/PID/task/TID) and that task's start time, so that a thread that ended (a
// terminated Worker too), or one whose id another has since taken (a restarted container's), is known to be gone.
import { readFileSync, readlinkSync, statSync } from 'fs';

export interface Task {
  id: number;
  /** Since boot, in clock ticks (field 22 of /proc/PID/task/TID/stat). */
  start: string;
}

let ownTask: Task | null | undefined;

/** A task's start time; null where it cannot be read, ENOENT's code where there is no such task (or /proc hides it). */
function startOf(path: string): string | null | 'ENOENT' {
  try {
    const stat = readFileSync(`${path}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null; // after "(comm) ", field 3 on
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'ENOENT' : null;
  }
}

/**
 * This thread's task (synchronous: /proc/thread-self names the thread that reads it); null without a /proc of this
 * process's own pid namespace (another's names other pids), where holders are told apart by pid alone.
 */
export function thisTask(): Task | null {
  if (ownTask === undefined) {
    ownTask = null;
    try {
      const [pid, , id] = readlinkSync('/proc/thread-self').split('/');
      const start = startOf('/proc/thread-self');
      if (pid === String(process.pid) && Number(id) > 0 && start !== null && start !== 'ENOENT') ownTask = { id: Number(id), start };
    } catch {
      // no /proc
    }
  }
  return ownTask;
}

/** `task${id}s${start}` of this thread, as holders are named in lock files and temporary files' names ('' without one). */
export function taskTag(): string {
  const task = thisTask();
  return task === null ? '' : `task${task.id}s${task.start}`;
}

/** The task in a tag taskTag wrote; null for anything else (an older pirl's names). */
export function taskOf(tag: string | undefined): Task | null {
  const m = /^task(\d+)s(\d+)$/.exec(tag ?? '');
  return m ? { id: Number(m[1]), start: m[2] } : null;
}

export const sameTask = (a: Task | null, b: Task | null): boolean => a !== null && b !== null && a.id === b.id && a.start === b.start;

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // alive, someone else's
  }
}

/**
 * Whether the holder (`pid`, and `task` where named) of something this thread does not hold may still use it: its
 * process runs and, where named, its thread — the same one, by its start time. A thread this user's /proc cannot
 * show (hidepid, another pid namespace) is taken as running, as its process.
 */
export function holderAlive(pid: number, task: Task | null): boolean {
  if (!processAlive(pid)) return false;
  if (task === null) return true;
  const start = startOf(`/proc/${pid}/task/${task.id}`);
  if (start === null) return true; // unreadable to this user
  if (start !== 'ENOENT') return start === task.start;
  try {
    statSync(`/proc/${pid}/task`); // the process is visible: its thread is gone
    return false;
  } catch {
    return true;
  }
}
