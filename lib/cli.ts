#!/usr/bin/env node
// The `pirl` command line (cli/main.ts), once libuv's pool is sized: what cli/main requires (sharp) may start it.
// eslint-disable-next-line @typescript-eslint/no-require-imports
(require('../scripts/threadpool') as { sizeThreadPool(): void }).sizeThreadPool();
// eslint-disable-next-line @typescript-eslint/no-require-imports
(require('./cli/main') as typeof import('./cli/main')).run();
