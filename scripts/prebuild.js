#!/usr/bin/env node
'use strict';
// `npm run prebuild`: builds the addon for the libtorch found (scripts/build.js, CMake: with the CUDA
// kernels when that libtorch has CUDA) and files it, stripped, as prebuilds/<platform>-<arch>/<tag>/pirl.node,
// the folder the loader (scripts/addon.js) picks for that libtorch. Prints the folder. `--into DIR`: filed under
// DIR/prebuilds instead, DIR being another copy of this package (a release tree) of the same sources. `--no-build`:
// build/ as it is, if current (see currentBuild).
// `--check`: see check().
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const { build } = require('./build');

const root = path.join(__dirname, '..');

function prebuild({ into, noBuild }) {
  if (into !== root) checkSameSources(into);
  const { found, record, addon } = noBuild ? currentBuild() : build();
  if (!found.tag) throw new Error(`the version of libtorch at ${found.torchDir} is unknown (no TorchConfigVersion.cmake): no prebuild tag for it`);
  const dir = path.join(into, 'prebuilds', `${process.platform}-${process.arch}`, found.tag);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'pirl.node');
  fs.copyFileSync(addon, file);
  const strip = spawnSync('strip', ['--strip-unneeded', file], { stdio: 'inherit' });
  if (strip.status !== 0) throw new Error(`strip --strip-unneeded ${file} failed (${strip.error ? strip.error.code : `exit ${strip.status}`})`);
  fs.writeFileSync(path.join(dir, 'libtorch.json'), `${JSON.stringify(record, null, 2)}\n`);
  return dir;
}

// A prebuild filed in another tree must be what its native/ builds: its loader refuses one made from other sources.
function checkSameSources(into) {
  const { nativeSourcesHash } = require('./addon');
  if (!fs.existsSync(path.join(into, 'native'))) throw new Error(`--into ${into}: not a copy of pirl (no native/ folder)`);
  if (nativeSourcesHash(into) !== nativeSourcesHash(root)) {
    throw new Error(`--into ${into}: its native/ differs from ${path.join(root, 'native')}, whose build this would file there: run npm run prebuild in ${into}`);
  }
}

// `--no-build`: build/ as it is (npm test's, just made), where the loader would take it — of these sources, for the
// libtorch found — or refused. A build, even one with nothing to do, configures build/ again.
function currentBuild() {
  const { locateAddon } = require('./addon');
  let addon;
  try {
    addon = locateAddon(root);
  } catch (err) {
    throw new Error(`--no-build: build/ holds no addon for the libtorch found and these sources: run this without --no-build\n${err.message}`);
  }
  const record = path.join(path.dirname(addon.path), 'libtorch.json');
  if (addon.kind !== 'build' || !fs.existsSync(record)) {
    throw new Error(`--no-build: build/ holds no addon built by scripts/build.js for the libtorch found (${addon.path}): run this without --no-build`);
  }
  return { found: addon.libtorch, record: JSON.parse(fs.readFileSync(record, 'utf8')), addon: addon.path };
}

// `--into DIR` (or --into=DIR), resolved where the command was typed (npm run starts scripts in the package root;
// this package's own folder without it), and `--no-build`. Anything else is refused, not ignored.
function parseArguments(argv) {
  const options = { into: root, noBuild: false };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split(/=(.*)/s);
    if (argv[i] === '--no-build') {
      options.noBuild = true;
      continue;
    }
    if (flag !== '--into') throw new Error(`unknown argument '${argv[i]}' (prebuild takes --into DIR and --no-build, or --check)`);
    const dir = inline ?? argv[++i];
    if (!dir || dir.startsWith('--')) throw new Error('--into needs the folder of the package copy to file the prebuild in');
    options.into = path.resolve(process.env.INIT_CWD || process.cwd(), dir);
  }
  return options;
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
  console.log(process.argv.includes('--check') ? check() : path.relative(process.cwd(), prebuild(parseArguments(process.argv.slice(2)))));
} catch (err) {
  console.error(`pirl: ${err.message}`);
  process.exit(1);
}
