#!/usr/bin/env node
// The `pirl` command line (cli/main.ts). Requiring it loads the native addon, which may fail (no libtorch,
// no build for it): said as its message, which names what to run, not as a stack trace.
import { ADDON_NOT_LOADED } from './errors';

try {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  (require('./cli/main') as typeof import('./cli/main')).run();
} catch (err) {
  if ((err as { code?: unknown }).code !== ADDON_NOT_LOADED) throw err;
  console.error((err as Error).message);
  process.exitCode = 1;
}
