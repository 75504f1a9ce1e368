#!/usr/bin/env node
'use strict';
// Builds the addon with CMake against the libtorch that scripts/libtorch.js finds, into
// build/Release/pirl.node, and records that libtorch next to it (build/Release/libtorch.json) so the
// loader uses this build only with the libtorch, and the C++ sources, it was made from.
// Usage: node scripts/build.js [--tests] [--benchmarks] [--debug]
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const os = require('os');
const { nativeSourcesHash } = require('./addon');
const { findLibtorch } = require('./libtorch');

const root = path.join(__dirname, '..');
const buildDir = path.join(root, 'build');

function onPath(program) {
  return spawnSync('sh', ['-c', `command -v ${program}`], { stdio: 'ignore' }).status === 0;
}

function run(args) {
  // Build logs go to stderr so that callers' stdout (benchmark JSON) stays clean.
  const r = spawnSync('cmake', args, { cwd: root, stdio: ['inherit', 2, 2] });
  if (r.error) throw new Error(`cmake could not be run (${r.error.code}): building pirl needs CMake >= 3.19 and a C++17 compiler (C++20 for libtorch >= 2.13)`);
  if (r.status !== 0) throw new Error(`cmake ${args[0]} ${args[1]} failed (exit ${r.status})`);
}

/** Builds; returns the libtorch built against and the addon's path. */
function build({ tests = false, benchmarks = false, debug = false } = {}) {
  const { found, tried } = findLibtorch();
  if (!found) throw new Error(`libtorch not found; looked at:\n  ${tried.join('\n  ')}`);
  console.error(`pirl: building against libtorch ${found.version} (${found.source}: ${found.torchDir}), CUDA ${found.cuda ? 'yes' : 'no'}`);
  const config = debug ? 'Debug' : 'Release';
  // A build folder keeps the generator it was configured with; a new one uses Ninja where there is one.
  const generator = !fs.existsSync(path.join(buildDir, 'CMakeCache.txt')) && onPath('ninja') ? ['-G', 'Ninja'] : [];
  // Configure every time, so the libtorch found now is the one built against.
  // Optional targets are only ever switched on, so building one kind keeps the others built.
  run(['-S', root, '-B', buildDir, ...generator, `-DCMAKE_BUILD_TYPE=${config}`, `-DTorch_DIR=${found.torchDir}`,
    ...(tests ? ['-DPIRL_BUILD_TESTS=ON'] : []), ...(benchmarks ? ['-DPIRL_BUILD_BENCHMARKS=ON'] : [])]);
  run(['--build', buildDir, '--parallel', String(os.availableParallelism())]);
  const addon = path.join(buildDir, config, 'pirl.node');
  // The sources built from, so that the loader refuses this addon once they change (scripts/addon.js).
  const record = { ...found, sources: nativeSourcesHash(root) };
  // Renamed into place: a process loading the addon meanwhile (a test, another build's prebuild) reads it whole.
  const file = path.join(buildDir, config, 'libtorch.json');
  fs.writeFileSync(`${file}.${process.pid}`, `${JSON.stringify(record, null, 2)}\n`);
  fs.renameSync(`${file}.${process.pid}`, file);
  return { found, record, addon };
}

/**
 * In a package installed as a dependency (under node_modules), the addon and its record are all that is
 * used: CMake's intermediates (~260 MB: objects, CMakeFiles) go. A checkout keeps them for its next build.
 */
function pruneBuild(addon, dir = buildDir) {
  if (!dir.split(path.sep).includes('node_modules')) return;
  const keep = new Set([addon, path.join(path.dirname(addon), 'libtorch.json')]);
  const prune = (folder) => {
    for (const entry of fs.readdirSync(folder, { withFileTypes: true })) {
      const file = path.join(folder, entry.name);
      if (keep.has(file)) continue;
      if (entry.isDirectory() && [...keep].some((k) => k.startsWith(file + path.sep))) prune(file);
      else fs.rmSync(file, { recursive: true, force: true });
    }
  };
  prune(dir);
}

module.exports = { build, pruneBuild };

if (require.main === module) {
  try {
    const flag = (name) => process.argv.includes(name);
    build({ tests: flag('--tests'), benchmarks: flag('--benchmarks'), debug: flag('--debug') });
  } catch (err) {
    console.error(`pirl: ${err.message}`);
    process.exit(1);
  }
}
