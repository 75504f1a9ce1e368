#!/usr/bin/env node
'use strict';
// The one place that decides which libtorch pirl builds against and loads. CMakeLists.txt, binding.gyp,
// the install script, the addon loader (at every require) and `pirl info` all ask this file.
//
// Order: $LIBTORCH (an unpacked libtorch, CPU or CUDA) → $Torch_DIR / $CMAKE_PREFIX_PATH →
// the torch of python3 (its package's share/cmake) → the system (Debian libtorch-dev).

const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');

const MULTIARCH_LIBDIRS = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib'];

function isTorchDir(dir) {
  return !!dir && fs.existsSync(path.join(dir, 'TorchConfig.cmake'));
}

// A prefix path may be the install prefix itself or any folder CMake would search below it.
function torchDirUnderPrefix(prefix) {
  const candidates = [
    prefix,
    path.join(prefix, 'share/cmake/Torch'),
    path.join(prefix, 'Torch'),
    path.join(prefix, 'lib/cmake/Torch'),
    ...MULTIARCH_LIBDIRS.map((d) => path.join(prefix, path.relative('/usr', d), 'cmake/Torch')),
  ];
  return candidates.find(isTorchDir);
}

// Where python3 would import torch from, without importing it (importing takes seconds), plus the
// paths whose change could change that answer: its sys.path, its user site and the interpreter.
const PYTHON_QUERY = [
  'import importlib.util as u, json, site, sys',
  "s = u.find_spec('torch')",
  "print(json.dumps({'torch': (s.submodule_search_locations or [None])[0] if s else None,",
  "  'watch': [p for p in sys.path if p] + [site.getusersitepackages(), sys.executable]}))",
].join('\n');

// The environment that selects the python3 and its sys.path (pyenv also reads .python-version
// files from the working directory): part of the cache key.
const PYTHON_ENV = ['PATH', 'PYTHONPATH', 'PYTHONHOME', 'PYTHONUSERBASE', 'HOME', 'PYENV_VERSION', 'VIRTUAL_ENV', 'CONDA_PREFIX'];

function pythonCacheFile() {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'pirl', 'python-torch.json');
}

function mtimeOf(file) {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return null;
  }
}

function readJson(file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return null;
  }
}

// Asking python3 costs a process start (0.2 s through a pyenv shim) at every require, so its answer
// is cached per interpreter, environment and working directory, and trusted while none of the watched
// paths changed: `pip install torch` changes a site-packages folder, a new python3 a PATH folder.
function pythonTorchPackage(python) {
  const file = pythonCacheFile();
  const key = JSON.stringify([python, process.cwd(), ...PYTHON_ENV.map((name) => process.env[name] || '')]);
  const cache = readJson(file) || {};
  const hit = cache[key];
  if (hit && hit.watch.every(([p, mtime]) => mtimeOf(p) === mtime)) return hit.torch;
  let answer;
  try {
    answer = JSON.parse(execFileSync(python, ['-c', PYTHON_QUERY], { stdio: ['ignore', 'pipe', 'ignore'], timeout: 30000 }).toString());
  } catch {
    return null; // no such python, or it failed: nothing to cache
  }
  const pathDirs = (process.env.PATH || '').split(path.delimiter).filter(Boolean);
  cache[key] = { torch: answer.torch, watch: [...answer.watch, ...pathDirs].map((p) => [p, mtimeOf(p)]) };
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}`;
    fs.writeFileSync(tmp, JSON.stringify(cache));
    fs.renameSync(tmp, file); // atomic: concurrent processes read a whole file or none
  } catch {
    // an unwritable cache only costs the next process another python3 start
  }
  return answer.torch;
}

// The first python3 whose torch has a CMake package (Debian's python3-torch has none: the system entry finds it).
function pythonTorchDir() {
  for (const python of ['python3', '/usr/bin/python3']) {
    const torch = pythonTorchPackage(python);
    // torch.utils.cmake_prefix_path is <torch>/share/cmake
    const dir = torch && torchDirUnderPrefix(path.join(torch, 'share', 'cmake'));
    if (dir) return { dir, python };
  }
  return null;
}

function candidates() {
  const env = process.env;
  const list = [];
  if (env.LIBTORCH) {
    list.push({ source: 'LIBTORCH', dir: torchDirUnderPrefix(env.LIBTORCH), given: env.LIBTORCH });
  }
  if (env.Torch_DIR) list.push({ source: 'Torch_DIR', dir: torchDirUnderPrefix(env.Torch_DIR), given: env.Torch_DIR });
  for (const p of (env.CMAKE_PREFIX_PATH || '').split(path.delimiter).filter(Boolean)) {
    list.push({ source: 'CMAKE_PREFIX_PATH', dir: torchDirUnderPrefix(p), given: p });
  }
  return list;
}

function describe(source, torchDir) {
  const config = fs.readFileSync(path.join(torchDir, 'TorchConfig.cmake'), 'utf8');
  let version = 'unknown';
  const versionFile = path.join(torchDir, 'TorchConfigVersion.cmake');
  if (fs.existsSync(versionFile)) {
    const m = /set\(PACKAGE_VERSION "([^"]+)"\)/.exec(fs.readFileSync(versionFile, 'utf8'));
    if (m) version = m[1];
  }
  // TorchConfig.cmake computes its prefix from its own folder: three levels up in upstream libtorch and
  // pip's torch (<prefix>/share/cmake/Torch), four in Debian's (<prefix>/lib/<triple>/cmake/Torch).
  const ups = /TORCH_INSTALL_PREFIX "\$\{CMAKE_CURRENT_LIST_DIR\}\/((?:\.\.\/?)+)"/.exec(config);
  const prefix = path.resolve(torchDir, ups ? ups[1] : '../../..');
  const libDirs = [path.join(prefix, 'lib'), ...MULTIARCH_LIBDIRS];
  const libDir = libDirs.find((d) => fs.existsSync(path.join(d, 'libtorch_cpu.so')) || fs.existsSync(path.join(d, 'libtorch.so')));
  const abi = /_GLIBCXX_USE_CXX11_ABI=([01])/.exec(config);
  const includeDirs = [path.join(prefix, 'include'), path.join(prefix, 'include/torch/csrc/api/include')];
  const t = {
    source,
    torchDir,
    prefix,
    version,
    libDir: libDir || null,
    includeDirs,
    cxx11Abi: abi ? abi[1] === '1' : true,
    cuda: !!libDir && fs.existsSync(path.join(libDir, 'libtorch_cuda.so')),
  };
  const cudaVersion = t.cuda ? cudaVersionOf(prefix) : null;
  return { ...t, cudaVersion, tag: prebuildTag(t.version, t.cuda, cudaVersion, t.cxx11Abi) };
}

// pip's torch says it in <prefix>/version.py (`cuda: Optional[str] = '13.0'`), an unpacked libtorch
// from pytorch.org in <prefix>/build-version (`2.11.0+cu130`); Debian's CUDA libtorch says neither.
function cudaVersionOf(prefix) {
  const read = (file) => {
    try {
      return fs.readFileSync(path.join(prefix, file), 'utf8');
    } catch {
      return '';
    }
  };
  const pip = /^cuda\b[^=\n]*=\s*['"](\d+)\.(\d+)/m.exec(read('version.py'));
  if (pip) return `${pip[1]}.${pip[2]}`;
  const zip = /\+cu(\d+)(\d)\s*$/.exec(read('build-version'));
  return zip ? `${zip[1]}.${zip[2]}` : null;
}

/**
 * The prebuild folder name for a libtorch: what an addon built against it needs at load time.
 * Major.minor (libtorch's C++ ABI changes between minor releases), CPU or the CUDA runtime
 * (libcudart's soname), and the pre-C++11 string ABI where it is used. null when the version is unknown.
 */
function prebuildTag(version, cuda, cudaVersion, cxx11Abi) {
  const v = /^(\d+)\.(\d+)/.exec(version);
  if (!v) return null;
  const flavour = !cuda ? 'cpu' : cudaVersion ? `cu${cudaVersion.replace('.', '')}` : 'cuda';
  return `torch-${v[1]}.${v[2]}-${flavour}${cxx11Abi ? '' : '-abi0'}`;
}

/** Finds libtorch: `{ found, tried }`, found being its description or null, tried what was looked at. */
function findLibtorch() {
  const tried = [];
  for (const c of candidates()) {
    if (c.dir) return { found: describe(c.source, c.dir), tried };
    tried.push(`${c.source}=${c.given} (no TorchConfig.cmake below it)`);
  }
  const py = pythonTorchDir();
  if (py) return { found: describe(`python3 torch (${py.python})`, py.dir), tried };
  tried.push('the torch of python3 and /usr/bin/python3 (none with share/cmake/Torch)');
  const systemDirs = MULTIARCH_LIBDIRS.map((d) => path.join(d, 'cmake/Torch'));
  const system = systemDirs.find(isTorchDir);
  if (system) return { found: describe('system', system), tried };
  tried.push(`system (${systemDirs.join(', ')})`);
  return { found: null, tried };
}

/** Whether the dynamic loader and the compiler search this folder without being told. */
function isSystemDir(dir) {
  return dir === '/usr/include' || MULTIARCH_LIBDIRS.includes(dir);
}

// The compiler already searches /usr/include and the multiarch lib dirs; naming them again would
// reorder system headers (breaking libstdc++'s #include_next) and bake a useless rpath in.
function gypFlags(t) {
  const includes = t.includeDirs.filter((d) => !isSystemDir(d)).map((d) => `-isystem${d}`);
  const libDir = isSystemDir(t.libDir) ? [] : [`-L${t.libDir}`, `-Wl,-rpath,${t.libDir}`];
  return {
    cflags: [`-D_GLIBCXX_USE_CXX11_ABI=${t.cxx11Abi ? 1 : 0}`, ...includes].join(' '),
    libs: [...libDir, '-ltorch', '-ltorch_cpu', '-lc10'].join(' '),
  };
}

module.exports = { findLibtorch, gypFlags, isSystemDir, prebuildTag };

if (require.main === module) {
  const { found: t, tried } = findLibtorch();
  const arg = process.argv[2] || '--json';
  if (!t) {
    console.error(`pirl: libtorch not found; looked at:\n  ${tried.join('\n  ')}`);
    process.exit(1);
  }
  const outputs = {
    '--json': () => JSON.stringify(t, null, 2),
    '--torch-dir': () => t.torchDir,
    '--tag': () => t.tag,
    '--gyp-cflags': () => gypFlags(t).cflags,
    '--gyp-libs': () => gypFlags(t).libs,
  };
  if (!outputs[arg]) {
    console.error(`pirl: libtorch.js takes one of ${Object.keys(outputs).join(', ')}; got ${arg}`);
    process.exit(2);
  }
  console.log(outputs[arg]());
}
