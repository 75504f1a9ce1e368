import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { explainLoadFailure } from '../lib/binding';
import { fakeLibtorch, tmpDir } from './helpers';

const root = path.join(__dirname, '..');

// A copy of the compiled TS and the loader's scripts without build/ or prebuilds/ next to it.
function bareCopy(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-nobuild-'));
  for (const entry of ['dist', 'scripts', 'package.json']) fs.cpSync(path.join(root, entry), path.join(dir, entry), { recursive: true });
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
  return dir;
}

const platform = `${process.platform}-${process.arch}`;

// A build from source at install time (no prebuild loaded) left 265 MB of CMake's intermediates in node_modules.
test('a build installed as a dependency keeps its addon and record, not the intermediates; a checkout keeps them all', () => {
  const { pruneBuild } = require('../scripts/build') as { pruneBuild(addon: string, dir: string): void };
  const tree = ['Release/pirl.node', 'Release/libtorch.json', 'Release/other.o', 'CMakeFiles/pirl.dir/a.o', 'CMakeCache.txt', 'build.ninja'];
  const layout = (dir: string) => {
    for (const f of tree) {
      fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
      fs.writeFileSync(path.join(dir, f), 'x');
    }
    pruneBuild(path.join(dir, 'Release', 'pirl.node'), dir);
    return fs.readdirSync(dir, { recursive: true }).map(String).filter((f) => fs.statSync(path.join(dir, f)).isFile()).sort();
  };
  const work = tmpDir('pirl-prune-');
  try {
    expect(layout(path.join(work, 'node_modules', 'pirl', 'build'))).toEqual(['Release/libtorch.json', 'Release/pirl.node']);
    expect(layout(path.join(work, 'checkout', 'build'))).toEqual([...tree].sort());
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

describe('when the addon does not load, the error says why and what to run', () => {
  test('no build and no prebuild at all', () => {
    const dir = bareCopy();
    const r = spawnSync(process.execPath, ['-e', "require('./dist')"], { cwd: dir, encoding: 'utf8' });
    fs.rmSync(dir, { recursive: true, force: true });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/pirl: could not load the native addon: no prebuilt addon matches the libtorch found, and none was built for it/);
    expect(r.stderr).toContain(`prebuilds shipped: none for ${platform}.`);
    expect(r.stderr).toContain(`node ${path.join(dir, 'scripts/install.js')}`);
  });

  test("the command line without an addon: its help and flag mistakes answer as ever; a command that computes says why it cannot, once, exit 1", () => {
    const dir = bareCopy();
    const pirl = (...args: string[]) => spawnSync(process.execPath, [path.join(dir, 'dist/cli.js'), ...args], { cwd: dir, encoding: 'utf8' });
    try {
      const help = pirl('--help');
      expect([help.status, help.stderr]).toEqual([0, '']);
      expect(help.stdout).toMatch(/^Usage: pirl <command>/);
      const mistake = pirl('train', 'fashion-mnist', '--lr', '-5');
      expect([mistake.status, mistake.stderr]).toEqual([2, "pirl: --lr must be a number in [0, 1e+30], got '-5'\n(pirl train --help: its options)\n"]);
      const info = pirl('info');
      expect(info.status).toBe(1);
      expect(info.stdout).toBe('');
      expect(info.stderr).toMatch(/^pirl: could not load the native addon: no prebuilt addon matches the libtorch found/);
      expect(info.stderr.match(/could not load/g)).toHaveLength(1);
      expect(info.stderr).toContain(`node ${path.join(dir, 'scripts/install.js')}`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a libtorch with no matching prebuild (2.11 with CUDA 13.0): names it, the prebuilds shipped, a local build for another libtorch, and the one command', () => {
    const dir = bareCopy();
    const libtorch = fakeLibtorch('2.11.0', '13.0');
    fs.mkdirSync(path.join(dir, 'prebuilds', platform, 'torch-1.13-cpu'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'prebuilds', platform, 'torch-1.13-cpu', 'pirl.node'), '');
    fs.mkdirSync(path.join(dir, 'prebuilds', platform, 'torch-2.10-cu130')); // a folder without an addon is not a prebuild
    fs.mkdirSync(path.join(dir, 'build', 'Release'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'build', 'Release', 'pirl.node'), '');
    fs.writeFileSync(path.join(dir, 'build', 'Release', 'libtorch.json'), JSON.stringify({ tag: 'torch-1.13-cpu', version: '1.13.0', source: 'system' }));
    const r = spawnSync(process.execPath, ['-e', "require('./dist')"], { cwd: dir, encoding: 'utf8', env: { ...process.env, LIBTORCH: libtorch } });
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(libtorch, { recursive: true, force: true });
    expect(r.status).not.toBe(0);
    expect(r.stderr.split('no prebuilt addon matches')).toHaveLength(2); // once: not repeated as the error's cause
    // Node prints the uncaught error's source line first, then the message.
    expect(r.stderr.slice(r.stderr.indexOf('pirl: could not load')).split('\n').slice(0, 7)).toEqual([
      'pirl: could not load the native addon: no prebuilt addon matches the libtorch found, and none was built for it.',
      `libtorch found: 2.11.0 with CUDA 13.0, from LIBTORCH (${path.join(libtorch, 'share/cmake/Torch')}); it needs the prebuild ${platform}/torch-2.11-cu130.`,
      `prebuilds shipped: ${platform}/torch-1.13-cpu.`,
      'build/Release/pirl.node was built for torch-1.13-cpu (libtorch 1.13.0 from system)',
      'Build the addon for this libtorch (needs CMake >= 3.19 and a C++17 compiler, C++20 for libtorch >= 2.13; a few minutes):',
      `  node ${path.join(dir, 'scripts/install.js')}`,
      expect.stringMatching(/^ {4}at /),
    ]);
  });

  test('the prebuild tag: version major.minor, CPU or the CUDA runtime, the pre-C++11 ABI spelt out', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { prebuildTag } = require('../scripts/libtorch') as { prebuildTag(v: string, cuda: boolean, cudaVersion: string | null, abi: boolean): string | null };
    expect(prebuildTag('1.13.0', false, null, true)).toBe('torch-1.13-cpu');
    expect(prebuildTag('2.11.0', true, '13.0', true)).toBe('torch-2.11-cu130');
    expect(prebuildTag('2.5.1', true, '12.4', false)).toBe('torch-2.5-cu124-abi0');
    expect(prebuildTag('2.6.0', true, null, true)).toBe('torch-2.6-cuda');
    expect(prebuildTag('unknown', false, null, true)).toBeNull();
  });

  test("pip's torch, found through python3: its CUDA version read from version.py; python3 asked once, again only when its paths change", () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-python-'));
    const site = path.join(tmp, 'site-packages');
    const torch = path.join(site, 'torch');
    fakeLibtorch('2.11.0', '13.0', { prefix: torch, buildVersion: false });
    fs.writeFileSync(path.join(torch, 'version.py'), "__version__ = '2.11.0'\ncuda: Optional[str] = '13.0'\n");
    // A python3 that answers what scripts/libtorch.js asks and counts the times it was asked.
    const bin = path.join(tmp, 'bin');
    fs.mkdirSync(bin);
    fs.writeFileSync(path.join(bin, 'python3'), `#!/bin/sh\necho asked >> ${tmp}/asked\necho '${JSON.stringify({ torch, watch: [site] })}'\n`, { mode: 0o755 });
    const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${bin}:${process.env.PATH}`, XDG_CACHE_HOME: path.join(tmp, 'cache') };
    for (const name of ['LIBTORCH', 'Torch_DIR', 'CMAKE_PREFIX_PATH']) delete env[name];
    const find = () => JSON.parse(execFileSync(process.execPath, [path.join(root, 'scripts/libtorch.js')], { env }).toString());
    const asked = () => fs.readFileSync(path.join(tmp, 'asked'), 'utf8').split('\n').filter(Boolean).length;
    try {
      expect(find()).toMatchObject({ source: 'python3 torch (python3)', prefix: torch, version: '2.11.0', cuda: true, cudaVersion: '13.0', tag: 'torch-2.11-cu130' });
      expect(asked()).toBe(1);
      expect(find().tag).toBe('torch-2.11-cu130');
      expect(asked()).toBe(1); // from the cache
      fs.mkdirSync(path.join(site, 'torch-2.11.1.dist-info')); // what pip install does to site-packages
      find();
      expect(asked()).toBe(2);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  test('libtorch missing: the dynamic loader cannot find it', () => {
    // The message glibc gives when a DT_NEEDED library is absent (the real one is checked below).
    const msg = 'libtorch_cpu.so.1.13: cannot open shared object file: No such file or directory';
    const text = explainLoadFailure(new Error(msg));
    expect(text).toMatch(/Cause: libtorch is missing: libtorch_cpu\.so\.1\.13/);
    expect(text).toMatch(/LIBTORCH=\/path\/to\/libtorch/);
  });

  test('ABI mismatch: undefined libtorch symbol', () => {
    const text = explainLoadFailure(new Error('/x/pirl.node: undefined symbol: _ZN3c105ErrorC2ENS_14SourceLocationESs'));
    expect(text).toMatch(/built against a different libtorch .*ABI mismatch/);
    expect(text).toMatch(/scripts\/install.js/);
  });

  test('a real loader message for a missing library is classified', () => {
    let message = '';
    try {
      process.dlopen({ exports: {} } as NodeJS.Module, '/nonexistent/libtorch_cpu.so.9');
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/cannot open shared object file/);
    expect(explainLoadFailure(new Error(message.replace('/nonexistent/', '')))).toMatch(/libtorch is missing/);
  });

  test('a LIBTORCH without a libtorch in it falls through to the next place in the order', () => {
    const out = execFileSync(process.execPath, [path.join(root, 'scripts/libtorch.js')], {
      env: { ...process.env, LIBTORCH: '/nonexistent/libtorch' },
    }).toString();
    expect(JSON.parse(out).torchDir).toMatch(/Torch$/);
  });

  test("an upstream or pip libtorch layout (<prefix>/share/cmake/Torch) is read from its own prefix, CUDA included", () => {
    const prefix = fakeLibtorch('2.11.0', '13.0');
    const found = JSON.parse(execFileSync(process.execPath, [path.join(root, 'scripts/libtorch.js')], { env: { ...process.env, LIBTORCH: prefix } }).toString());
    fs.rmSync(prefix, { recursive: true, force: true });
    expect(found).toMatchObject({ source: 'LIBTORCH', prefix, libDir: path.join(prefix, 'lib'), cuda: true, cudaVersion: '13.0', tag: 'torch-2.11-cu130' });
  });

  test('libtorch.js refuses an unknown option, naming the ones it takes', () => {
    const r = spawnSync(process.execPath, [path.join(root, 'scripts/libtorch.js'), '--version'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toBe('pirl: libtorch.js takes one of --json, --torch-dir, --tag, --gyp-cflags, --gyp-libs; got --version\n');
  });
});

describe("UCX's memory hooks and debug signal are off before libtorch loads (with them, ~1% of node processes crashed at exit on Debian's libtorch 2.14, and SIGHUP did not stop training)", () => {
  // Records UCX_MEM_EVENTS and UCX_DEBUG_SIGNO as each shared object is opened: libucs reads them in its constructor.
  const watch = "const d = process.dlopen; process.dlopen = (m, f, ...r) => { console.log(`dlopen ${process.env.UCX_MEM_EVENTS} ${process.env.UCX_DEBUG_SIGNO} ${f}`); return d(m, f, ...r); };";
  const dlopens = (env: NodeJS.ProcessEnv) => {
    const r = spawnSync(process.execPath, ['-e', `${watch} require('./dist');`], { cwd: root, encoding: 'utf8', env });
    expect(r.stderr).toBe('');
    return r.stdout.split('\n').filter((line) => line.endsWith('pirl.node'));
  };

  test('turned off for the addon and the libtorch it brings', () => {
    const env = { ...process.env };
    delete env.UCX_MEM_EVENTS;
    delete env.UCX_DEBUG_SIGNO;
    expect(dlopens(env)).toEqual([expect.stringMatching(/^dlopen no 0 \//)]);
  });

  test("a user's own setting is kept", () => {
    expect(dlopens({ ...process.env, UCX_MEM_EVENTS: 'yes', UCX_DEBUG_SIGNO: 'SIGUSR2' })).toEqual([expect.stringMatching(/^dlopen yes SIGUSR2 \//)]);
  });
});

describe("libuv's pool has a thread per core and two (sharp decodes on it), unless the user sized it", () => {
  // As on an 8-core machine: six reads of FIFOs that no one writes hold six pool threads; a seventh
  // piece of pool work finishes only if the pool has more threads than that (libuv's default is 4).
  // `entry` requires pirl: the package, or the command line (which requires sharp before it loads the addon, if it does).
  const probe = (env: NodeJS.ProcessEnv, entry = "require('./dist')") => {
    const dir = tmpDir();
    const fifos = Array.from({ length: 6 }, (_, i) => path.join(dir, `fifo${i}`));
    for (const f of fifos) expect(spawnSync('mkfifo', [f]).status).toBe(0);
    const script = `require('os').availableParallelism = () => 8; ${entry}; const fs = require('fs');
      for (const f of ${JSON.stringify(fifos)}) fs.open(f, 'r', () => {});
      // Then a writer for each FIFO (O_RDWR does not block): Node's exit joins the pool's threads, which the reads held 30 s.
      const answer = (pool) => { console.log(pool, process.env.UV_THREADPOOL_SIZE); for (const f of ${JSON.stringify(fifos)}) fs.openSync(f, fs.constants.O_RDWR); process.exit(0); };
      const late = setTimeout(() => answer('blocked'), 3000);
      fs.stat(__filename, () => { clearTimeout(late); answer('free'); });`;
    const r = spawnSync(process.execPath, ['-e', script], { cwd: root, encoding: 'utf8', env, timeout: 30000 });
    fs.rmSync(dir, { recursive: true, force: true });
    expect({ status: r.status, signal: r.signal }).toEqual({ status: 0, signal: null }); // exited, not killed at the timeout
    return r.stdout.trim();
  };

  test('sized to the cores + 2 when unset', () => {
    const env = { ...process.env };
    delete env.UV_THREADPOOL_SIZE;
    expect(probe(env)).toBe('free 10');
    expect(probe({ ...env, UV_THREADPOOL_SIZE: '' })).toBe('free 10'); // empty: libuv would read 1 thread
    // The pirl command, which never loaded the addon for its --version (nor for a flag mistake): sized all the same.
    expect(probe(env, "process.argv = [process.argv[0], 'pirl', '--version']; require('./dist/cli.js')")).toBe(`${(JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version}\nfree 10`);
  });

  test("a user's own size is kept", () => {
    expect(probe({ ...process.env, UV_THREADPOOL_SIZE: '4' })).toBe('blocked 4');
  });
});

describe('the raw binding reads options strictly: no silent fallback', () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { binding } = require('../lib/binding') as typeof import('../lib/binding');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const pirl = require('../lib') as typeof import('../lib');
  const model = { ...pirl.resolveModelOptions({ width: 0.125, embeddingDim: 8 }) };
  const loss = pirl.resolveLossOptions({ negatives: 4 });
  const sgd = { momentum: 0.9, weightDecay: 1e-4, precision: 'fp32' as const, seed: 0, cudaGraphs: false };
  const t = (data: Float32Array, shape: number[]) => pirl.Tensor.from(data, shape).handle;

  test('an unknown name for every enum option (18 arguments) is a TypeError naming the option', async () => {
    const handle = await binding.createPirlModel(model);
    const bank = await binding.createMemoryBank(10, 8, 0, 'cpu');
    const x = t(new Float32Array(16), [2, 8]);
    const rows = pirl.Tensor.from(new BigInt64Array([0n, 1n])).handle;
    const cases: Array<[string, () => unknown]> = [
      ['options.arch', () => binding.createPirlModel({ ...model, arch: 'resnet99' as never })],
      ['options.stem', () => binding.createPirlModel({ ...model, stem: 'tiny' as never })],
      ['layer', () => handle.embed(t(new Float32Array(3 * 8 * 8), [1, 3, 8, 8]), 'res4' as never, 1)],
      ['scope', () => handle.stateDict('heads' as never)],
      ['scope', () => handle.loadStateDict('heads' as never, [], [], true)],
      ['options.mode', () => new binding.PirlLossHandle({ ...loss, mode: 'softmax' as never })],
      ['options.z', () => new binding.PirlLossHandle({ ...loss, z: 'auto' as never })],
      ['loss.mode', () => new binding.TrainerHandle(handle, bank, { ...loss, mode: 'softmax' as never }, sgd)],
      ['loss.z', () => new binding.TrainerHandle(handle, bank, { ...loss, z: 'auto' as never }, sgd)],
      ['step.precision', () => new binding.TrainerHandle(handle, bank, loss, { ...sgd, precision: 'fp8' as never })],
      ['mode', () => binding.nceLoss(x, bank.rows(), rows, rows, 0.07, 'softmax' as never, -1, null)],
      ['dtype', () => binding.zeros([1], 'float16' as never, 'cpu')],
      ['dtype', () => binding.fromArray(new Float32Array(1), [1], 'half' as never)],
      ['device', () => binding.zeros([1], 'float32', 'tpu')],
      ['device', () => binding.createMemoryBank(10, 8, 0, 'tpu')],
      ['device', () => binding.restoreMemoryBank(bank.rows(), bank.generatorState(), 'tpu', 'rows', 'generator')],
      ['device', () => handle.to('tpu')],
      ['device', () => x.to('tpu')],
    ];
    for (const [name, call] of cases) {
      let error: unknown;
      try {
        await call();
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(TypeError);
      expect((error as Error).message).toMatch(new RegExp(`^${name.replace('.', '\\.')} must be`));
    }
    expect(cases).toHaveLength(18);
  });

  test('a missing key or a wrong type is a TypeError naming the field', async () => {
    const { width: _width, ...noWidth } = model;
    expect(() => binding.createPirlModel(noWidth as never)).toThrow(/^options\.width is missing$/);
    expect(() => binding.createPirlModel({ ...model, width: '1' as never })).toThrow(/^options\.width must be a number, got '1'$/);
    expect(() => binding.createPirlModel({ ...model, embeddingDim: 1.5 })).toThrow(/^options\.embeddingDim must be an integer, got 1.5$/);
    expect(() => binding.createPirlModel({ ...model, channelsLast: 1 as never })).toThrow(/^options\.channelsLast must be a boolean, got 1$/);
    expect(() => new binding.PirlLossHandle(null as never)).toThrow(/^options must be an object, got null$/);
    const handle = await binding.createPirlModel(model);
    const bank = await binding.createMemoryBank(10, 8, 0, 'cpu');
    expect(() => new binding.TrainerHandle(handle, bank, loss, { ...sgd, cudaGraphs: 1 as never })).toThrow(/^step\.cudaGraphs must be a boolean, got 1$/);
    const { cudaGraphs: _graphs, ...noGraphs } = sgd;
    expect(() => new binding.TrainerHandle(handle, bank, loss, noGraphs as never)).toThrow(/^step\.cudaGraphs is missing$/);
    const config = pirl.resolveSamplerConfig('small');
    const { hue: _hue, ...noHue } = config;
    const source = pirl.Tensor.from(new Uint8Array(16 * 16 * 3), [1, 16, 16, 3]).handle;
    const zero = pirl.Tensor.from(new BigInt64Array([0n])).handle;
    const lanes = new binding.LanesHandle(1);
    expect(() => binding.makeBatch(source, zero, zero, 0, 0, config, false, 'cpu', lanes, 1)).toThrow(/^lane must be in \[0, 1\), got 1$/);
    expect(() => binding.makeBatch(source, zero, zero, 0, 0, config, false, 'cpu', {} as never, 0)).toThrow(/^lanes must be a LanesHandle, got an object$/);
    expect(() => new binding.LanesHandle(0)).toThrow(/^count must be in \[1, 64\], got 0$/);
    expect(() => binding.makeBatch(source, zero, zero, 0, 0, noHue as never, false, 'cpu', lanes, 0)).toThrow(/^config\.hue is missing$/);
    expect(() => binding.makeBatch(source, zero, zero, 0, 0, { ...config, imageSize: Infinity }, false, 'cpu', lanes, 0)).toThrow(/^config\.imageSize must be an integer, got Infinity$/);
  });

  // The CUDA suite covers the other side.
  (pirl.buildInfo().cuda.compiled ? test.skip : test)("'cuda' on a libtorch without CUDA is refused by the binding too", () => {
    expect(() => binding.zeros([1], 'float32', 'cuda')).toThrow(/^device is 'cuda' but the libtorch this addon runs on has no CUDA/);
  });
});
