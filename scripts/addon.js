'use strict';
// Which compiled addon goes with the libtorch present, and loading it: lib/binding.ts at every
// require and the install step's probe both come here. scripts/libtorch.js says which libtorch.
//
// Looked for, in order: a local build made for that libtorch (build/Release, build/Debug, with the
// libtorch.json that scripts/build.js writes beside it), then prebuilds/<platform>-<arch>/<tag>/pirl.node;
// either only when made from this package's C++ sources (their hash, in that record).
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { findLibtorch, isSystemDir } = require('./libtorch');
const { sizeThreadPool } = require('./threadpool');

const packageRoot = path.join(__dirname, '..');
const platform = `${process.platform}-${process.arch}`;

// glibc's RTLD_NODELETE: keeps a library loaded although process.dlopen closes what registers no module.
const RTLD_NODELETE = 0x1000;

function codedError(code, message) {
  return Object.assign(new Error(message), { code });
}

function readJson(file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return null;
  }
}

/**
 * The hash of the addon's C++ sources as shipped (native/core, native/addon; null without them): a build
 * records it, so that an addon made from other sources (an older pirl: exports missing or changed) is
 * not loaded under this JavaScript. ~6 ms.
 */
// What the build compiles: an editor's backup or a stray dotfile (npm leaves those out of a package) is not.
const SOURCE = /^[^.].*\.(c|cc|cpp|cu|cuh|h|hpp)$/;

function nativeSourcesHash(root = packageRoot) {
  const hash = crypto.createHash('sha256');
  let files = 0;
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const file = path.join(dir, e.name);
      if (e.isDirectory()) walk(file);
      else if (e.isFile() && SOURCE.test(e.name)) {
        hash.update(`${path.relative(root, file)}\0`).update(fs.readFileSync(file)).update('\0');
        files++;
      }
    }
  };
  for (const dir of ['native/core', 'native/addon']) {
    if (fs.existsSync(path.join(root, dir))) walk(path.join(root, dir));
  }
  return files > 0 ? hash.digest('hex') : null;
}

// Why the addon described by `record` (its libtorch.json) does not go with these sources, or null if it does
// (an addon without a record — node-gyp's build — is taken as made from them).
function staleSources(record, sources) {
  if (!record || !sources || record.sources === sources) return null;
  return 'was built from other C++ sources than this package\'s native/ (an older or newer pirl)';
}

/** The prebuild tags shipped in this package for this platform. */
function shippedPrebuilds(root = packageRoot) {
  const dir = path.join(root, 'prebuilds', platform);
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).filter((tag) => fs.existsSync(path.join(dir, tag, 'pirl.node'))).sort();
}

/** The addon for the libtorch found: `{ path, kind: 'build' | 'prebuild', libtorch }`, or a coded error saying why none. */
function locateAddon(root = packageRoot) {
  const { found, tried } = findLibtorch();
  if (!found) {
    throw codedError('PIRL_NO_LIBTORCH', `libtorch was not found. Looked at:\n${tried.map((t) => `  - ${t}`).join('\n')}`);
  }
  const sources = nativeSourcesHash(root);
  const builtFor = [];
  for (const config of ['Release', 'Debug']) {
    const addon = path.join(root, 'build', config, 'pirl.node');
    if (!fs.existsSync(addon)) continue;
    // A build without a record (node-gyp rebuild) is taken as made for the libtorch present.
    const record = readJson(path.join(root, 'build', config, 'libtorch.json'));
    const stale = staleSources(record, sources);
    if (stale) builtFor.push(`${path.relative(root, addon)} ${stale}`);
    else if (!record || record.tag === found.tag) return { path: addon, kind: 'build', libtorch: found };
    else builtFor.push(`${path.relative(root, addon)} was built for ${record.tag} (libtorch ${record.version} from ${record.source})`);
  }
  const shipped = shippedPrebuilds(root);
  if (found.tag && shipped.includes(found.tag)) {
    const dir = path.join(root, 'prebuilds', platform, found.tag);
    const stale = staleSources(readJson(path.join(dir, 'libtorch.json')), sources);
    if (!stale) return { path: path.join(dir, 'pirl.node'), kind: 'prebuild', libtorch: found };
    builtFor.push(`${path.relative(root, path.join(dir, 'pirl.node'))} ${stale}`);
  }
  throw codedError('PIRL_NO_PREBUILD', [
    `no prebuilt addon matches the libtorch found, and none was built for it.`,
    `libtorch found: ${found.version}${found.cuda ? ` with CUDA ${found.cudaVersion || '(version unknown)'}` : ' (CPU)'}, from ${found.source} (${found.torchDir}); ` +
      `it needs the prebuild ${found.tag ? `${platform}/${found.tag}` : '(none: its version is unknown)'}.`,
    `prebuilds shipped: ${shipped.length ? shipped.map((tag) => `${platform}/${tag}`).join(', ') : `none for ${platform}`}.`,
    ...builtFor,
    `Build the addon for this libtorch (needs CMake >= 3.19 and a C++17 compiler, C++20 for libtorch >= 2.13; a few minutes):`,
    `  node ${path.join(root, 'scripts', 'install.js')}`,
  ].join('\n'));
}

/**
 * Loads a libtorch outside the loader's default folders (an unpacked LIBTORCH, pip's torch/lib) globally
 * and for good, so the addon finds its libraries by soname without LD_LIBRARY_PATH.
 */
function preloadLibtorch(libtorch) {
  if (!libtorch.libDir || isSystemDir(libtorch.libDir)) return;
  const flags = os.constants.dlopen.RTLD_NOW | os.constants.dlopen.RTLD_GLOBAL | RTLD_NODELETE;
  for (const lib of ['libc10.so', 'libc10_cuda.so', 'libtorch_cpu.so', 'libtorch_cuda.so', 'libtorch.so']) {
    const file = path.join(libtorch.libDir, lib);
    if (!fs.existsSync(file)) continue;
    try {
      process.dlopen({ exports: {} }, file, flags);
    } catch (err) {
      if (!/did not self-register/.test(String(err.message))) throw err;
    }
  }
}

// What UCX must not do in a pirl process, unless the user set it: libucs reads these in its constructor.
const UCX_OFF = [['UCX_MEM_EVENTS', 'no'], ['UCX_DEBUG_SIGNO', '0']];

/** Finds and loads the addon: `{ binding, path, kind, libtorch }`. */
function loadAddon(root = packageRoot) {
  const addon = locateAddon(root);
  // UCX, which libtorch builds with OpenMPI load (Debian's 2.x), hooks mmap/munmap as it loads; its hooks
  // race with V8's heap teardown and ~1% of node processes then crash at exit. It also takes SIGHUP as its
  // debug signal, so that a closed terminal no longer stopped training. pirl uses no MPI.
  for (const [name, off] of UCX_OFF) if (process.env[name] === undefined) process.env[name] = off;
  // Counts when pirl is required before any async fs, dns, crypto or zlib work (the CLI sizes it before all of that).
  sizeThreadPool();
  preloadLibtorch(addon.libtorch);
  return { ...addon, binding: require(addon.path) };
}

module.exports = { loadAddon, locateAddon, nativeSourcesHash, shippedPrebuilds, staleSources };
