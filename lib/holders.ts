// Who holds a lock file or writes a temporary file: a process and, since Worker threads share its pid, the thread in
// it — named by its kernel task (/proc/PID/task/TID), which ends with the thread, a terminated Worker's too.
import { readlinkSync, statSync } from 'fs';

let ownTask: number | null | undefined;

/** This thread's kernel task id (synchronous: /proc/thread-self names the thread that reads it); null without /proc. */
export function thisTask(): number | null {
  if (ownTask === undefined) {
    try {
      ownTask = Number(readlinkSync('/proc/thread-self').split('/')[2]) || null;
    } catch {
      ownTask = null;
    }
  }
  return ownTask;
}

/** `task${id}` of this thread, as holders are named in lock files and temporary files' names ('' without /proc). */
export function taskTag(): string {
  const task = thisTask();
  return task === null ? '' : `task${task}`;
}

/** The task id in a tag taskTag wrote; null for anything else (an older pirl's names). */
export function taskOf(tag: string | undefined): number | null {
  const m = /^task(\d+)$/.exec(tag ?? '');
  return m ? Number(m[1]) : null;
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // alive, someone else's
  }
}

/** Whether thread `task` of process `pid` runs (a /proc this user may not read: taken as running). */
export function taskAlive(pid: number, task: number): boolean {
  try {
    statSync(`/proc/${pid}/task/${task}`);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}

/**
 * Whether the holder (`pid`, and `task` where named) of something this thread does not hold may still use it: its
 * process runs and, where named, its thread. Another thread of this process counts as another holder.
 */
export function holderAlive(pid: number, task: number | null): boolean {
  return processAlive(pid) && (task === null || taskAlive(pid, task));
}
