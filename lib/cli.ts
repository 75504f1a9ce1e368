#!/usr/bin/env node
// The `pirl` command line (cli/main.ts).
import { run } from './cli/main';

run();
