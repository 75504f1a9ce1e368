#!/usr/bin/env node
'use strict';
// npm install step of pirl: make sure a libtorch exists (installing Debian's with apt-get when
// allowed), then use the addon that loads for it (scripts/addon.js: a prebuild for that libtorch),
// or build one from source. Also the command a user runs when npm skipped this step and no prebuild matches.
//
// Environment: PIRL_NO_APT=1   never run apt-get (report what to install instead)
//              PIRL_FORCE_BUILD=1   build from source even when a prebuild loads
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const { findLibtorch } = require('./libtorch');
const { build, pruneBuild } = require('./build');
const { canUseApt, aptInstall } = require('./apt');

const root = path.join(__dirname, '..');
const APT_PACKAGES = ['libtorch-dev', 'libopenblas0-pthread'];

function log(msg) {
  console.log(`pirl: ${msg}`);
}

function noLibtorchHelp(tried) {
  return [
    'libtorch was not found, and pirl needs it. Looked at:',
    ...tried.map((t) => `  - ${t}`),
    'Ways to provide it:',
    '  - Debian/Ubuntu: as root, apt-get install libtorch-dev libopenblas0-pthread (or rerun npm install as root)',
    '  - an unpacked libtorch (CPU or CUDA, from pytorch.org): LIBTORCH=/path/to/libtorch npm install',
    '  - a CMake package dir: Torch_DIR=/path/to/share/cmake/Torch or CMAKE_PREFIX_PATH=...',
    '  - PyTorch for python3 (pip install torch): found where python3 imports torch from',
  ].join('\n');
}

function referenceBlasBehindSystemLibtorch() {
  try {
    return /\/blas\/libblas\.so/.test(fs.realpathSync('/usr/lib/x86_64-linux-gnu/libblas.so.3'));
  } catch {
    return false;
  }
}

// In a child process: loading libtorch here would keep it in this process for the build. Returns the addon
// loaded, or why none did (the loader's own error, which names what it tried).
function addonLoads() {
  const probe = "console.log(require(process.argv[1]).loadAddon().path)";
  const r = spawnSync(process.execPath, ['-e', probe, path.join(__dirname, 'addon.js')], { encoding: 'utf8' });
  if (r.status === 0) return { path: r.stdout.trim() };
  const why = (r.error ? r.error.message : `${r.stderr}`.trim()).split('\n').find((line) => line.trim() !== '') || `exit ${r.status}`;
  return { why };
}

function main() {
  let { found, tried } = findLibtorch();
  if (!found) {
    if (!canUseApt()) throw new Error(noLibtorchHelp(tried));
    aptInstall(APT_PACKAGES);
    ({ found, tried } = findLibtorch());
    if (!found) throw new Error(noLibtorchHelp(tried));
  }
  log(`libtorch ${found.version} from ${found.source} (${found.torchDir}), prebuild tag ${found.tag}`);
  if (found.source === 'system' && referenceBlasBehindSystemLibtorch()) {
    if (canUseApt()) aptInstall(['libopenblas0-pthread']);
    else console.warn('pirl: warning: libtorch uses the reference BLAS (~30x slower matmul). Fix: apt-get install libopenblas0-pthread');
  }
  const loaded = process.env.PIRL_FORCE_BUILD ? null : addonLoads();
  if (loaded && loaded.path) {
    log(`using ${path.relative(root, loaded.path)}`);
    return;
  }
  log(`${loaded ? `no addon loads for ${found.tag} (${loaded.why})` : 'PIRL_FORCE_BUILD is set'}: building from source (CMake, a few minutes)`);
  const { addon } = build();
  pruneBuild(addon);
  log(`built ${path.relative(root, addon)}`);
}

try {
  main();
} catch (err) {
  console.error(`pirl: ${err.message}`);
  process.exit(1);
}
