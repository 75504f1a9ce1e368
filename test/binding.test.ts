import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { explainLoadFailure } from '../lib/binding';

const root = path.join(__dirname, '..');

describe('when the addon does not load, the error says why and what to run', () => {
  test('no build at all', () => {
    // A copy of the compiled TS without build/ or prebuilds/ next to it.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-nobuild-'));
    fs.cpSync(path.join(root, 'dist'), path.join(dir, 'dist'), { recursive: true });
    fs.copyFileSync(path.join(root, 'package.json'), path.join(dir, 'package.json'));
    fs.symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
    const r = spawnSync(process.execPath, ['-e', "require('./dist')"], { cwd: dir, encoding: 'utf8' });
    fs.rmSync(dir, { recursive: true, force: true });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/pirl: could not load the native addon/);
    expect(r.stderr).toMatch(/Cause: no build of the addon exists/);
    expect(r.stderr).toMatch(/Possible solutions:/);
    expect(r.stderr).toMatch(/apt-get install libtorch-dev libopenblas0-pthread/);
    expect(r.stderr).toMatch(/node node_modules\/pirl\/scripts\/install.js/);
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
    const prefix = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-libtorch-'));
    fs.mkdirSync(path.join(prefix, 'share/cmake/Torch'), { recursive: true });
    fs.mkdirSync(path.join(prefix, 'lib'));
    // The line upstream's TorchConfig.cmake computes its prefix with: three levels above its folder.
    fs.writeFileSync(path.join(prefix, 'share/cmake/Torch/TorchConfig.cmake'),
      'get_filename_component(TORCH_INSTALL_PREFIX "${CMAKE_CURRENT_LIST_DIR}/../../../" ABSOLUTE)\n');
    for (const lib of ['libtorch_cpu.so', 'libtorch_cuda.so']) fs.writeFileSync(path.join(prefix, 'lib', lib), '');
    const found = JSON.parse(execFileSync(process.execPath, [path.join(root, 'scripts/libtorch.js')], { env: { ...process.env, LIBTORCH: prefix } }).toString());
    fs.rmSync(prefix, { recursive: true, force: true });
    expect(found).toMatchObject({ source: 'LIBTORCH', prefix, libDir: path.join(prefix, 'lib'), cuda: true });
  });
});

describe('the raw binding reads options strictly: no silent fallback', () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { binding } = require('../lib/binding') as typeof import('../lib/binding');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const pirl = require('../lib') as typeof import('../lib');
  const model = { ...pirl.resolveModelOptions({ width: 0.125, embeddingDim: 8 }) };
  const loss = pirl.resolveLossOptions({ negatives: 4 });
  const sgd = { momentum: 0.9, weightDecay: 1e-4, precision: 'fp32' as const };
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
      ['mode', () => binding.nceLoss(x, bank.rows(), rows, rows, 0.07, 'softmax' as never, -1)],
      ['dtype', () => binding.zeros([1], 'float16' as never, 'cpu')],
      ['dtype', () => binding.fromArray(new Float32Array(1), [1], 'half' as never)],
      ['device', () => binding.zeros([1], 'float32', 'tpu')],
      ['device', () => binding.createMemoryBank(10, 8, 0, 'tpu')],
      ['device', () => binding.restoreMemoryBank(bank.rows(), bank.generatorState(), 'tpu')],
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
    const config = pirl.resolveSamplerConfig('small');
    const { hue: _hue, ...noHue } = config;
    const source = pirl.Tensor.from(new Uint8Array(16 * 16 * 3), [1, 16, 16, 3]).handle;
    const zero = pirl.Tensor.from(new BigInt64Array([0n])).handle;
    expect(() => binding.makeBatch(source, zero, zero, 0, 0, noHue as never, false)).toThrow(/^config\.hue is missing$/);
    expect(() => binding.makeBatch(source, zero, zero, 0, 0, { ...config, imageSize: Infinity }, false)).toThrow(/^config\.imageSize must be an integer, got Infinity$/);
  });

  test("'cuda' on a libtorch without CUDA is refused by the binding too", () => {
    if (pirl.buildInfo().cuda.compiled) return; // the CUDA suite covers the other side
    expect(() => binding.zeros([1], 'float32', 'cuda')).toThrow(/^device is 'cuda' but the libtorch this addon runs on has no CUDA/);
  });
});
