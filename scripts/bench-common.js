'use strict';
// What the benchmark and demo scripts share: their command-line options, the median, the compiled
// TypeScript they load, and the native NCE benchmark they run.
const path = require('path');
const { execFileSync } = require('child_process');

const root = path.join(__dirname, '..');
const args = process.argv.slice(2);

/** `--name VALUE` from the command line, or `fallback`; numbers when the fallback is one. */
function option(name, fallback) {
  if (!args.includes(name)) return fallback;
  const value = args[args.indexOf(name) + 1];
  return typeof fallback === 'number' ? Number(value) : value;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Compiles lib/ into dist/, which the scripts require; not with PIRL_DIST_BUILT=1 (.ci/device-check.sh: dist/ came built). */
function compileTypeScript() {
  if (process.env.PIRL_DIST_BUILT === '1') return;
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.json')]);
}

/** The native NCE benchmark (built with node scripts/build.js --benchmarks). */
const nceBenchExe = path.join(root, 'build', 'pirl_bench_nce');

/** One case of it, its arguments as bench/nce_bench.cpp takes them: `{ ms: [per repetition], extraMB }`. */
function runNceBench(argv) {
  return JSON.parse(execFileSync(nceBenchExe, argv.map(String), { stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20 }).toString());
}

module.exports = { root, args, option, median, compileTypeScript, nceBenchExe, runNceBench };
