// Folders for pirl's output files: the CLI's --out flags and the files the library writes.
import { promises as fs } from 'fs';
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
