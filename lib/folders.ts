// Folders for pirl's output files (the CLI's --out flags and the files the library writes), and the files it reads.
import { constants, promises as fs } from 'fs';
import * as path from 'path';

import { errorFrom } from './errors';

/**
 * Creates `dir` and its missing parents one at a time — Node's recursive mkdir spins forever where the
 * parent is a pseudo-filesystem like /proc. Errors say which folder could not be made and why.
 */
export async function makeFolder(dir: string): Promise<void> {
  const missing: string[] = [];
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    try {
      if (!(await fs.stat(d)).isDirectory()) throw Object.assign(new Error(`${d} is a file, not a folder`), { code: 'ENOTDIR' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      missing.unshift(d);
      if (path.dirname(d) === d) break;
    }
  }
  for (const d of missing) {
    try {
      await fs.mkdir(d);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw errorFrom(`cannot create ${d}: ${(err as Error).message}`, err);
    }
  }
}

/** `p` resolved, its links followed as far as it exists (the rest, to be made, appended as given). */
export async function realPathOf(p: string): Promise<string> {
  const resolved = path.resolve(p);
  const real = await fs.realpath(resolved).catch(() => null);
  if (real !== null) return real;
  const parent = path.dirname(resolved);
  return parent === resolved ? resolved : path.join(await realPathOf(parent), path.basename(resolved));
}

/**
 * `file` opened for reading without blocking (a FIFO's open waits for a writer forever); unless it is a regular file it
 * is closed and `notRegular()` thrown. Errors of the open itself are the system's.
 */
export async function openRegular(file: string, notRegular = () => new Error('not a regular file (a FIFO, a device or a folder)')): Promise<fs.FileHandle> {
  const handle = await fs.open(file, constants.O_RDONLY | constants.O_NONBLOCK);
  if (!(await handle.stat()).isFile()) {
    await handle.close();
    throw notRegular();
  }
  return handle;
}

/**
 * What a file that is not what it should be holds, from its first bytes: `text starting "…"` (a CSV, an HTML
 * page, a log) or `its first bytes are 3c 21 …`.
 */
export function describeStart(bytes: Buffer): string {
  const text = bytes.toString('utf8').replace(/\uFFFD$/, ''); // a character cut at the last byte read
  const printable = !/[\u0000-\u0008\u000e-\u001f\uFFFD]/.test(text);
  return printable ? `text starting ${JSON.stringify(text.slice(0, 40))}` : `its first bytes are ${bytes.subarray(0, 8).toString('hex').replace(/(..)(?!$)/g, '$1 ')}`;
}
