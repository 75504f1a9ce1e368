#!/usr/bin/env node
'use strict';
// The one place that decides which libtorch pirl builds against. CMakeLists.txt, binding.gyp,
// the install script and `pirl info` all ask this file, so every build path agrees.
//
// Order: $LIBTORCH (an unpacked libtorch, CPU or CUDA) → $Torch_DIR / $CMAKE_PREFIX_PATH →
// the torch of python3 (torch.utils.cmake_prefix_path) → the system (Debian libtorch-dev).

const fs = require('fs');
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

function pythonTorchDirs() {
  const found = [];
  for (const python of ['python3', '/usr/bin/python3']) {
    try {
      const out = execFileSync(python, ['-c', 'import torch.utils; print(torch.utils.cmake_prefix_path)'], {
        stdio: ['ignore', 'pipe', 'ignore'],
        timeout: 60000,
      }).toString().trim();
      const dir = out && torchDirUnderPrefix(out);
      if (dir) found.push({ dir, python });
    } catch {
      // this python has no torch: try the next one
    }
  }
  return found;
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
  return {
    source,
    torchDir,
    prefix,
    version,
    libDir: libDir || null,
    includeDirs,
    cxx11Abi: abi ? abi[1] === '1' : true,
    cuda: !!libDir && fs.existsSync(path.join(libDir, 'libtorch_cuda.so')),
  };
}

/** Finds libtorch: `{ found, tried }`, found being its description or null, tried what was looked at. */
function findLibtorch() {
  const tried = [];
  for (const c of candidates()) {
    if (c.dir) return { found: describe(c.source, c.dir), tried };
    tried.push(`${c.source}=${c.given} (no TorchConfig.cmake below it)`);
  }
  const [py] = pythonTorchDirs();
  if (py) return { found: describe(`python3 torch (${py.python})`, py.dir), tried };
  tried.push('python3 -c "import torch" (no torch with a cmake prefix)');
  const systemDirs = MULTIARCH_LIBDIRS.map((d) => path.join(d, 'cmake/Torch'));
  const system = systemDirs.find(isTorchDir);
  if (system) return { found: describe('system', system), tried };
  tried.push(`system (${systemDirs.join(', ')})`);
  return { found: null, tried };
}

// The compiler already searches /usr/include and the multiarch lib dirs; naming them again would
// reorder system headers (breaking libstdc++'s #include_next) and bake a useless rpath in.
function gypFlags(t) {
  const systemDir = (d) => d === '/usr/include' || MULTIARCH_LIBDIRS.includes(d);
  const includes = t.includeDirs.filter((d) => !systemDir(d)).map((d) => `-isystem${d}`);
  const libDir = systemDir(t.libDir) ? [] : [`-L${t.libDir}`, `-Wl,-rpath,${t.libDir}`];
  return {
    cflags: [`-D_GLIBCXX_USE_CXX11_ABI=${t.cxx11Abi ? 1 : 0}`, ...includes].join(' '),
    libs: [...libDir, '-ltorch', '-ltorch_cpu', '-lc10'].join(' '),
  };
}

module.exports = { findLibtorch, gypFlags };

if (require.main === module) {
  const { found: t, tried } = findLibtorch();
  const arg = process.argv[2] || '--json';
  if (!t) {
    console.error(`pirl: libtorch not found; looked at:\n  ${tried.join('\n  ')}`);
    process.exit(1);
  }
  if (arg === '--torch-dir') console.log(t.torchDir);
  else if (arg === '--gyp-cflags') console.log(gypFlags(t).cflags);
  else if (arg === '--gyp-libs') console.log(gypFlags(t).libs);
  else console.log(JSON.stringify(t, null, 2));
}
