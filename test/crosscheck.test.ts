// pirl against PyTorch in Python (Debian python3-torch), on the same input: its trunks against torchvision's, both
// ways, and its training steps against an independent float64 reference of PIRL's step.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { ArrayDataset, PirlModel, Tensor, Trainer, evalImages, lrAt, readSafetensors, writeSafetensors, type TrainConfig } from '../lib';

const PYTHON = '/usr/bin/python3';
const SCRIPT = path.join(__dirname, 'python', 'torchvision_crosscheck.py');
const STEP_REFERENCE = path.join(__dirname, 'python', 'pirl_step_reference.py');
const hasTorchvision = (() => {
  try {
    execFileSync(PYTHON, ['-c', 'import torch, torchvision'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
// CI installs python3-torchvision; a developer machine without it is told, not silently green.
const suite = hasTorchvision || process.env.CI ? describe : describe.skip;
if (!hasTorchvision) console.warn('crosscheck: python3-torch/python3-torchvision missing; install them to run these tests');

function python<T = Record<string, number>>(args: string[], script = SCRIPT): T {
  return JSON.parse(execFileSync(PYTHON, [script, ...args], { encoding: 'utf8' }).trim().split('\n').pop()!);
}

suite.each(['resnet18', 'resnet50'] as const)('%s and torchvision', (arch) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-xcheck-'));
  const input = new Float32Array(3 * 3 * 64 * 64).map((_, i) => Math.sin(i * 0.37) * 1.5);
  const inputFile = path.join(dir, 'input.f32');
  fs.writeFileSync(inputFile, input);
  const images = Tensor.from(input, [3, 3, 64, 64]);
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test.each(['imagenet', 'small'] as const)("exportTrunk (%s stem) loads into torchvision (strict; the small stem as README 'Transfer' says) and gives the same pooled features", async (stem) => {
    const model = await PirlModel.create({ arch, stem });
    // A training-mode pass moves the BatchNorm statistics away from their initial values.
    await model.train().forward(images, Tensor.from(new Float32Array(3 * 9 * 3 * 64 * 64).fill(0.3), [3, 9, 3, 64, 64]));
    const ours = await model.eval().embed(images);
    const trunkFile = path.join(dir, 'trunk.safetensors');
    await model.exportTrunk(trunkFile);
    const featuresFile = path.join(dir, 'ours.f32');
    fs.writeFileSync(featuresFile, ours.data() as Float32Array);
    const r = python(['check-export', arch, trunkFile, inputFile, featuresFile]);
    expect(r.scale).toBeGreaterThan(0.1); // features of a meaningful scale, as below
    expect(r.maxAbsDiff).toBeLessThanOrEqual(1e-4);
  });

  test('torchvision weights → importTrunk give the same pooled features', async () => {
    const weights = path.join(dir, 'torchvision.safetensors');
    const featuresFile = path.join(dir, 'theirs.f32');
    python(['make-torchvision', arch, '3', weights, inputFile, featuresFile]);
    const model = await PirlModel.create({ arch, stem: 'imagenet' });
    await model.importTrunk(weights);
    const ours = (await model.eval().embed(images)).data() as Float32Array;
    const theirs = new Float32Array(fs.readFileSync(featuresFile).buffer.slice(0));
    expect(ours.length).toBe(theirs.length);
    let maxDiff = 0;
    ours.forEach((v, i) => (maxDiff = Math.max(maxDiff, Math.abs(v - theirs[i]))));
    expect(Math.max(...Array.from(theirs, Math.abs))).toBeGreaterThan(0.1); // features of a meaningful scale
    expect(maxDiff).toBeLessThanOrEqual(1e-4);
    // the BatchNorm buffers came across too
    const { tensors } = await readSafetensors(weights);
    const mean = (await model.stateDict('trunk')).get('bn1.running_mean')!.data();
    expect([...mean]).toEqual([...tensors.get('bn1.running_mean')!.data()]);
  });
});

suite('training steps against an independent float64 reference of PIRL (test/python/pirl_step_reference.py)', () => {
  // Written from docs/PIRL.md and the README, not from the C++: the trunk, both heads, both loss terms, Z, SGD, the
  // lr, BatchNorm's statistics and the bank update. Each scenario's steps start from pirl's own checkpoints.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-stepref-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const small: TrainConfig = {
    model: { arch: 'resnet18', stem: 'small', width: 0.25 }, sampler: 'small', batchSize: 8, epochs: 1, seed: 3,
    loss: { negatives: 16 }, precision: 'fp32', device: 'cpu', warmupEpochs: 0,
  };
  const paper = { loss: { mode: 'nce', z: 'frozen', negatives: 16 }, bankInit: 'random', baseLr: 0.03 } as const;
  const scenarios: Array<[string, TrainConfig, number, boolean?]> = [
    ["the paper's NCE: Z estimated at the first step, then frozen; a random bank", paper, 2],
    ['NCE with an EMA of Z', { ...paper, loss: { ...paper.loss, z: 'ema' } }, 2],
    ['λ, τ and the bank momentum changed', { ...paper, loss: { ...paper.loss, lambda: 0.3, tau: 0.1, momentum: 0.7 } }, 1],
    ['shared negatives', { ...paper, loss: { ...paper.loss, sharedNegatives: true } }, 1],
    // 1e-4's weight decay is within the gradients' tolerance: 500× of it shows where it applies, and where not.
    ['a large weight decay', { ...paper, weightDecay: 0.05 }, 2],
    ["InfoNCE with the positive excluded from the negatives; VISSL's running statistics from both passes", { ...paper, loss: { ...paper.loss, mode: 'infonce', excludePositive: true }, model: { ...small.model, patchRunningStats: true } }, 1],
    ['a bank row twice and three times in one batch', paper, 1, true],
    ["the default recipe: InfoNCE, the bank from the initial model's features", {}, 2],
  ];

  // A scenario's files as the reference reads them: its config, and pirl's state before and after each step with its batch.
  async function record(name: string, overrides: TrainConfig, steps: number, repeatRows: boolean): Promise<string> {
    const out = path.join(dir, name.replace(/[^a-z0-9]+/gi, '-'));
    fs.mkdirSync(out);
    let x = 7;
    const pixels = Uint8Array.from({ length: 64 * 64 * 64 * 3 }, () => ((x = (x * 1103515245 + 12345) >>> 0) >>> 24));
    const data = new ArrayDataset(pixels, [64, 64, 64, 3]);
    const config = { ...small, ...overrides, model: { ...small.model, ...overrides.model }, loss: { ...small.loss, ...overrides.loss } } as TrainConfig;
    const trainer = await Trainer.create(data, config);
    const logged = [];
    await trainer.save(path.join(out, 'state0.safetensors'));
    const batches = trainer.loader.epoch(0);
    for (let s = 0; s < steps; s++) {
      const batch = (await batches.next()).value!;
      if (repeatRows) {
        const rows = Array.from(batch.indices.data() as BigInt64Array);
        [rows[1], rows[3], rows[4]] = [rows[0], rows[2], rows[2]];
        batch.indices = Tensor.from(BigInt64Array.from(rows), [rows.length]);
      }
      const tensors: Array<[string, Tensor]> = [['images', batch.images], ['patches', batch.patches], ['indices', batch.indices]];
      if (s === 0 && trainer.config.bankInit === 'features') {
        tensors.push(['evalImages', (await evalImages(data, Array.from({ length: data.length }, (_, i) => i), trainer.config.sampler.imageSize)).images]);
      }
      await writeSafetensors(path.join(out, `batch${s}.safetensors`), tensors);
      const lr = lrAt(trainer.schedule, trainer.progress.step);
      const { loss, lossImage, lossJigsaw, gradNorm } = await trainer.step(batch, lr);
      logged.push({ lr, loss, lossImage, lossJigsaw, gradNorm });
      await trainer.save(path.join(out, `state${s + 1}.safetensors`));
    }
    await batches.return(undefined);
    fs.writeFileSync(path.join(out, 'run.json'), JSON.stringify({ config: trainer.config, schedule: trainer.schedule, steps: logged }));
    await trainer.dispose();
    return out;
  }

  test('every scenario follows the reference: losses, gradients, Z, weights, BatchNorm statistics, bank', async () => {
    const dirs = [];
    for (const [name, overrides, steps, repeatRows] of scenarios) dirs.push(await record(name, overrides, steps, repeatRows ?? false));
    const results = python<Record<string, { compared: number; failures: string[] }>>(dirs, STEP_REFERENCE);
    for (const [i, [name, , steps]] of scenarios.entries()) {
      const r = results[dirs[i]];
      // 200 comparisons a step: the lr, 3 losses, the gradient norm, 2 Z, 66 parameters twice (momentum, weight), 60 BatchNorm buffers, the bank.
      expect({ name, failures: r.failures }).toEqual({ name, failures: [] });
      expect(r.compared).toBeGreaterThanOrEqual(200 * steps);
    }
  }, 300_000);
});
