#!/usr/bin/env node
'use strict';
// `npm run prebuild`: builds the addon for the libtorch found (scripts/build.js, CMake: with the CUDA
// kernels when that libtorch has CUDA) and files it, stripped, as prebuilds/<platform>-<arch>/<tag>/pirl.node,
// the folder the loader (scripts/addon.js) picks for that libtorch. Prints the folder.
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const { build } = require('./build');

const root = path.join(__dirname, '..');

function prebuild() {
  const { found, addon } = build();
  if (!found.tag) throw new Error(`the version of libtorch at ${found.torchDir} is unknown (no TorchConfigVersion.cmake): no prebuild tag for it`);
  const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, found.tag);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'pirl.node');
  fs.copyFileSync(addon, file);
  const strip = spawnSync('strip', ['--strip-unneeded', file], { stdio: 'inherit' });
  if (strip.status !== 0) throw new Error(`strip --strip-unneeded ${file} failed (${strip.error ? strip.error.code : `exit ${strip.status}`})`);
  fs.writeFileSync(path.join(dir, 'libtorch.json'), `${JSON.stringify(found, null, 2)}\n`);
  return dir;
}

try {
  console.log(path.relative(root, prebuild()));
} catch (err) {
  console.error(`pirl: ${err.message}`);
  process.exit(1);
}
