import { spawnSync } from 'child_process';
import * as path from 'path';

import {
  PRESETS, resolveFeatureOptions, resolveKnnOptions, resolveLinearProbeOptions, resolveLossOptions, resolveMemoryBankOptions,
  resolveModelOptions, resolveNceOptions, resolveRunOptions, resolveSamplerConfig, resolveTrainConfig, type PirlModelOptions,
  type ResolvedModelOptions, type TrainConfig,
} from '../lib';
import { checkArrayOf, checkNumber, isArgumentError } from '../lib/errors';

describe('resolveX: one owner of every default and allowed value', () => {
  test('each concept resolves to a complete plain object, keeping what is given', () => {
    expect(resolveModelOptions({ width: 0.5 })).toEqual({
      arch: 'resnet18', stem: 'small', width: 0.5, embeddingDim: 128, channelsLast: true, patchRunningStats: false, seed: 0,
    });
    expect(resolveLossOptions({}).mode).toBe('infonce');
    expect(resolveNceOptions({})).toEqual({ tau: 0.07, mode: 'nce', z: -1 });
    expect(resolveRunOptions({})).toEqual({ device: 'cpu', threads: null, seed: 0 });
    // null: decided by the model (featureOptionsFor: its training side, a batch that fits it).
    expect(resolveFeatureOptions({ layer: 'f' })).toEqual({ size: null, batchSize: null, layer: 'f', signal: null });
    expect(resolveKnnOptions({ k: 5 })).toMatchObject({ k: 5, tau: 0.07, size: null });
    expect(resolveLinearProbeOptions({}).epochs).toBe(30);
    expect(resolveMemoryBankOptions({ size: 10 })).toEqual({ size: 10, dim: 128, seed: 0, device: 'cpu' });
    expect(resolveSamplerConfig({ preset: 'paper', hue: 0.1 })).toEqual({ ...PRESETS.paper, hue: 0.1 });
    // The paper's photometric step is VISSL's (the four ops in turn); the small preset keeps what the demo measured.
    expect([PRESETS.paper.photometricOps, PRESETS.small.photometricOps]).toEqual(['all', 'one']);
    expect(() => resolveSamplerConfig({ photometricOps: 'two' as never })).toThrow(/^config.photometricOps must be 'one' or 'all', got "two"$/);
  });

  test("a training config: the recipe's defaults under what is given; the model is seeded by the run", () => {
    const c = resolveTrainConfig({ seed: 7, loss: { tau: 0.2 } });
    expect(c.recipe).toBe('default');
    expect(c.model.seed).toBe(7);
    expect(resolveTrainConfig({ seed: 7, model: { seed: 1 } }).model.seed).toBe(1);
    expect(c.loss).toEqual({ ...resolveLossOptions({}), tau: 0.2 });
    expect(c.sampler).toEqual(PRESETS.small);
    const paper = resolveTrainConfig({ recipe: 'paper' });
    expect(paper).toMatchObject({
      model: { arch: 'resnet50', stem: 'imagenet', patchRunningStats: true }, loss: { mode: 'nce', z: 'frozen', negatives: 32000 },
      sampler: PRESETS.paper, baseLr: 0.03, batchSize: 1024, bankInit: 'random',
    });
    // Resolving a resolved config changes nothing: a checkpoint's config reads back as written.
    expect(resolveTrainConfig(paper, 'x', true)).toEqual(paper);
  });

  test('options that cannot go together are refused, naming both, not one of them ignored', () => {
    const both = { sharedNegatives: true, excludePositive: true };
    expect(() => resolveTrainConfig({ loss: both })).toThrow(
      "config.loss.excludePositive must be false with config.loss.sharedNegatives (one set of negatives for the whole batch cannot leave out each sample's own row), got true");
    expect(() => resolveLossOptions(both)).toThrow(/^options\.excludePositive must be false with options\.sharedNegatives/);
    expect(resolveLossOptions({ sharedNegatives: true }).excludePositive).toBe(false);
  });

  test('an unknown or misspelt option is an error, not ignored', () => {
    expect(() => resolveModelOptions({ widht: 2 } as PirlModelOptions)).toThrow(/^options.widht is not an option; options takes arch, stem, width, embeddingDim, channelsLast, patchRunningStats, seed \(did you mean width\?\)$/);
    expect(() => resolveTrainConfig({ model: { device: 'cpu' } } as TrainConfig)).toThrow(/^config.model.device is not an option; config.model takes arch, /);
    // PyTorch's name for an option: that option; a word of several options' names guesses none.
    expect(() => resolveTrainConfig({ lr: 0.1 } as TrainConfig)).toThrow(/^config\.lr is not an option; config takes .* \(did you mean baseLr\?\)$/);
    expect(() => resolveTrainConfig({ size: 64 } as TrainConfig)).toThrow(/^config\.size is not an option; config takes [^(]*$/);
    expect(() => resolveTrainConfig({ sampler: { size: 64 } } as TrainConfig)).toThrow(/^config\.sampler\.size is not an option; config\.sampler takes [^(]*$/);
    expect(() => resolveTrainConfig([1, 2, 3] as never)).toThrow(/config must be an object, got \[1, 2, 3\]/);
    // The resolvers take the option types: a misspelt option or a bank without its size does not compile.
    // @ts-expect-error epochs, misspelt
    expect(() => resolveTrainConfig({ epoch: 1 })).toThrow(/^config.epoch is not an option/);
    // Seeds past 32 bits repeated smaller ones (the data order, the bank and the weights took their low 32 bits).
    expect(() => resolveRunOptions({ seed: 2 ** 32 })).toThrow('options.seed must be an integer in [0, 4294967295], got 4294967296');
    // A BigInt is written as one: "got 3" read as the number the check wanted.
    expect(() => resolveRunOptions({ seed: 3n as never })).toThrow('options.seed must be an integer in [0, 4294967295], got 3n');
    expect(resolveRunOptions({ seed: 2 ** 32 - 1 }).seed).toBe(4294967295);
    // @ts-expect-error size is required
    expect(() => resolveMemoryBankOptions({ dim: 8 })).toThrow(/^options.size must be an integer/);
  });

  test('complete mode (files pirl wrote) refuses a missing option instead of defaulting it', () => {
    const full = resolveTrainConfig();
    const { tau: _tau, ...loss } = full.loss;
    expect(() => resolveTrainConfig({ ...full, loss }, 'ckpt', true)).toThrow(/ckpt.loss.tau must be a positive number, got undefined/);
    expect(resolveTrainConfig({ ...full, loss }, 'ckpt').loss.tau).toBe(0.07);
  });

  test('an lr past float32 is refused by name (1e41 failed inside SGD: "value cannot be converted to type float")', () => {
    expect(() => resolveTrainConfig({ baseLr: 1e41 })).toThrow(/^config\.baseLr must be a number in \[0, 1e\+30\], got 1e\+41$/);
    expect(resolveTrainConfig({ baseLr: 1e30 }).baseLr).toBe(1e30);
  });

  test('one number vocabulary: NaN and ±Infinity are never in range, integers are integers', () => {
    for (const bad of [Number.NaN, Infinity, -Infinity]) {
      expect(() => resolveTrainConfig({ baseLr: bad })).toThrow(/config.baseLr must be a number in \[0, 1e\+30\]/);
      expect(() => resolveLossOptions({ tau: bad })).toThrow(/options.tau must be a positive number/);
      expect(() => resolveNceOptions({ z: bad })).toThrow(/options.z must be a finite number/);
    }
    expect(() => resolveTrainConfig({ epochs: 1.5 })).toThrow(TypeError);
    expect(() => resolveTrainConfig({ epochs: 0 })).toThrow(RangeError);
    expect(() => resolveTrainConfig({ epochs: '3' as never })).toThrow(TypeError);
    expect(checkArrayOf('xs', [1, 2], (a, v) => checkNumber(a, v, { min: 0 }))).toEqual([1, 2]);
    expect(() => checkArrayOf('xs', [1, -2], (a, v) => checkNumber(a, v, { min: 0 }))).toThrow(/xs\[1\] must be a number >= 0, got -2/);
  });

  test('argument errors carry the argument, what was expected and what came', () => {
    let caught: unknown;
    try {
      resolveTrainConfig({ loss: { lambda: 2 } });
    } catch (err) {
      caught = err;
    }
    expect(isArgumentError(caught)).toBe(true);
    expect(caught).toMatchObject({ argument: 'config.loss.lambda', expected: 'a number in [0, 1]', received: 2 });
  });

  test('the resolved types are the option types with every key present (compile-time)', () => {
    const options: PirlModelOptions = {};
    const resolved: ResolvedModelOptions = resolveModelOptions(options);
    const keys: Array<keyof PirlModelOptions> = Object.keys(resolved) as Array<keyof ResolvedModelOptions>;
    expect(keys.sort()).toEqual(['arch', 'channelsLast', 'embeddingDim', 'patchRunningStats', 'seed', 'stem', 'width']);
  });

  test("the CLI's defaults are the library's: the usage prints resolveTrainConfig()'s", () => {
    const d = resolveTrainConfig();
    const r = spawnSync(process.execPath, [path.join(__dirname, '..', 'dist', 'cli.js'), 'train', '--help'], { encoding: 'utf8' });
    for (const text of [`--epochs N (${d.epochs})`, `--batch N (${d.batchSize})`, `--lr BASE (${d.baseLr})`, `--arch resnet18|resnet34|resnet50 (${d.model.arch})`,
      `--mode nce|infonce (${d.loss.mode})`, `--bank-init random|features (${d.bankInit})`, `--negatives K (${d.loss.negatives})`]) {
      expect(r.stdout).toContain(text);
    }
  });
});
