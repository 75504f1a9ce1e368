#!/usr/bin/env node
'use strict';
// `npm run prebuild`: builds the addon for the libtorch found (scripts/build.js, CMake: with the CUDA
// kernels when that libtorch has CUDA) and files it, stripped, as prebuilds/<platform>-<arch>/<tag>/pirl.node,
// the folder the loader (scripts/addon.js) picks for that libtorch. Prints the folder. `--check`: see check().
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const { build } = require('./build');

const root = path.join(__dirname, '..');

function prebuild() {
  const { found, record, addon } = build();
  if (!found.tag) throw new Error(`the version of libtorch at ${found.torchDir} is unknown (no TorchConfigVersion.cmake): no prebuild tag for it`);
  const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, found.tag);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'pirl.node');
  fs.copyFileSync(addon, file);
  const strip = spawnSync('strip', ['--strip-unneeded', file], { stdio: 'inherit' });
  if (strip.status !== 0) throw new Error(`strip --strip-unneeded ${file} failed (${strip.error ? strip.error.code : `exit ${strip.status}`})`);
  fs.writeFileSync(path.join(dir, 'libtorch.json'), `${JSON.stringify(record, null, 2)}\n`);
  return dir;
}

// `--check` (npm's prepack): at least one prebuild, each made from these sources, or the pack is refused.
function check() {
  const { nativeSourcesHash, shippedPrebuilds, staleSources } = require('./addon');
  const platform = `${process.platform}-${process.arch}`;
  const sources = nativeSourcesHash(root);
  const stale = shippedPrebuilds(root).filter((tag) => {
    const record = path.join(root, 'prebuilds', platform, tag, 'libtorch.json');
    return staleSources(fs.existsSync(record) ? JSON.parse(fs.readFileSync(record, 'utf8')) : {}, sources);
  });
  if (stale.length > 0) {
    throw new Error(`prebuilds/${platform}/{${stale.join(',')}} ${stale.length === 1 ? 'was' : 'were'} built from other C++ sources than native/: ` +
      'a package would load them under this JavaScript. Rebuild each (npm run prebuild, against its libtorch) or delete it, then pack again');
  }
  // Without one, every install compiles for minutes (npm hides its output) and needs CMake and libtorch's headers.
  if (shippedPrebuilds(root).length === 0 && process.env.PIRL_PACK_WITHOUT_PREBUILDS !== '1') {
    throw new Error(`no prebuild in prebuilds/${platform}: a package without one compiles the addon on every install. ` +
      'Run npm run prebuild (once per libtorch to ship), then pack again; PIRL_PACK_WITHOUT_PREBUILDS=1 packs the sources alone');
  }
  return `prebuilds: ${shippedPrebuilds(root).length} for ${platform}, made from these sources`;
}

try {
  console.log(process.argv.includes('--check') ? check() : path.relative(root, prebuild()));
} catch (err) {
  console.error(`pirl: ${err.message}`);
  process.exit(1);
}
