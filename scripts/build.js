#!/usr/bin/env node
'use strict';
// Builds the addon with cmake-js against the libtorch that scripts/libtorch.js finds.
// Usage: node scripts/build.js [--tests] [--benchmarks] [--debug]
const path = require('path');
const { spawnSync } = require('child_process');
const os = require('os');
const { findLibtorch } = require('./libtorch');

const root = path.join(__dirname, '..');

function build({ tests = false, benchmarks = false, debug = false } = {}) {
  const { found, tried } = findLibtorch();
  if (!found) throw new Error(`libtorch not found; looked at:\n  ${tried.join('\n  ')}`);
  console.error(`pirl: building against libtorch ${found.version} (${found.source}: ${found.torchDir}), CUDA ${found.cuda ? 'yes' : 'no'}`);
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
  const common = ['--directory', root, '--out', path.join(root, 'build'), ...(debug ? ['--debug'] : [])];
  // Configure every time: `cmake-js build` alone keeps the options of an earlier configure.
  const steps = [
    // Optional targets are only ever switched on, so building one kind keeps the others built.
    ['configure', ...common, `--CDTorch_DIR=${found.torchDir}`,
      ...(tests ? ['--CDPIRL_BUILD_TESTS=ON'] : []), ...(benchmarks ? ['--CDPIRL_BUILD_BENCHMARKS=ON'] : [])],
    ['build', ...common, '--parallel', String(os.availableParallelism())],
  ];
  for (const step of steps) {
    // Build logs go to stderr so that callers' stdout (benchmark JSON) stays clean.
    const r = spawnSync(process.execPath, [cmakeJs, ...step], { cwd: root, stdio: ['inherit', 2, 2] });
    if (r.status !== 0) throw new Error(`cmake-js ${step[0]} failed (exit ${r.status})`);
  }
}

module.exports = { build };

if (require.main === module) {
  try {
    const flag = (name) => process.argv.includes(name);
    build({ tests: flag('--tests'), benchmarks: flag('--benchmarks'), debug: flag('--debug') });
  } catch (err) {
    console.error(`pirl: ${err.message}`);
    process.exit(1);
  }
}
