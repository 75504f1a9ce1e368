// CUDA end to end: runs only where a CUDA device is visible (the GPU check, .ci/device-check.sh);
// skipped elsewhere. The device is the run's: the model, the bank and every batch follow it.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { ArrayDataset, LinearProbe, Loader, MemoryBank, PirlLoss, PirlModel, Tensor, Trainer, buildInfo, readSafetensors, datasetFeatures, embedImages, getTf32, knnAccuracy, knnPredict, nearestNeighbours, setDeterministic, setTf32, weightsDigest, type PirlBatch } from '../lib';
import { raw, tmpDir } from './helpers';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const tiny = require('./fixtures/tiny-run.js') as { dataset(): import('../lib').Dataset; config: import('../lib').TrainConfig };

const close = (a: number, b: number, rel: number) => Math.abs(a - b) <= rel * Math.max(Math.abs(a), Math.abs(b)) + 1e-6;

// The GPU check sets PIRL_REQUIRE_CUDA=1: there a build or host without CUDA fails here rather than skip the rest.
(process.env.PIRL_REQUIRE_CUDA === '1' ? test : test.skip)('CUDA is compiled in and a device is visible (PIRL_REQUIRE_CUDA)', () => {
  const { cuda } = buildInfo();
  expect({ compiled: cuda.compiled, available: cuda.available }).toEqual({ compiled: true, available: true });
  expect(cuda.deviceCount).toBeGreaterThanOrEqual(1);
});

(buildInfo().cuda.available ? describe : describe.skip)('on a CUDA device', () => {
  // Compared with the CPU in float32: cuDNN's default TF32 convolutions round to ~5e-4.
  const tf32 = getTf32();
  beforeAll(() => setTf32({ convolutions: false }));
  afterAll(() => setTf32(tf32));

  test('a run trains on CUDA: model, bank and batches on the device; losses follow the CPU run', async () => {
    const cpu: number[] = [], cuda: number[] = [];
    await (await Trainer.create(tiny.dataset(), tiny.config)).fit({ callbacks: { onBatchEnd: (l) => void cpu.push(l.loss) } });
    const trainer = await Trainer.create(tiny.dataset(), { ...tiny.config, device: 'cuda' });
    expect(trainer.model.device).toBe('cuda:0');
    expect(trainer.bank.device).toBe('cuda:0');
    await trainer.fit({ callbacks: { onBatchEnd: (l) => void cuda.push(l.loss) } });
    expect(cuda).toHaveLength(cpu.length);
    // The same run in other arithmetic (cuDNN's, not TF32): rounding differences grow step by step, slowly.
    expect(cpu.length).toBeGreaterThan(3);
    const far = cuda.map((l, i) => ({ step: i, cuda: l, cpu: cpu[i] })).filter((s) => !close(s.cuda, s.cpu, 1e-3 * (s.step + 1)));
    expect(far).toEqual([]);
  });

  test('a loader delivering to CUDA hands over the batch the host makes, copied on a side stream', async () => {
    const options = { batchSize: 4, seed: 5, config: tiny.config.sampler };
    const host = new Loader(tiny.dataset(), options), gpu = new Loader(tiny.dataset(), { ...options, device: 'cuda' });
    const batches: PirlBatch[] = [];
    for await (const b of gpu.epoch(0)) batches.push(b); // every batch of the epoch: several in flight at once
    let i = 0;
    for await (const b of host.epoch(0)) {
      const there = batches[i++];
      expect(there.images.device).toBe('cuda:0');
      expect(there.patches.device).toBe('cuda:0');
      expect(there.indices.device).toBe('cpu');
      expect(await (await there.images.to('cpu')).data()).toEqual(b.images.data());
      expect(await (await there.patches.to('cpu')).data()).toEqual(b.patches.data());
      expect(there.permutations.data()).toEqual(b.permutations.data());
    }
    expect(i).toBe(batches.length);
  });

  test('bf16 and fp16 train on CUDA and follow fp32', async () => {
    const runs: Record<string, number[]> = {};
    for (const precision of ['fp32', 'bf16', 'fp16'] as const) {
      const trainer = await Trainer.create(tiny.dataset(), { ...tiny.config, baseLr: 0.05, device: 'cuda', precision });
      const losses: number[] = [];
      await trainer.fit({ callbacks: { onBatchEnd: (l) => void losses.push(l.loss) } });
      runs[precision] = losses;
    }
    // As precision.test's bound for bf16 on the CPU: the first step within 1%, each within 10%, their mean within 3%.
    expect(runs.fp32.length).toBeGreaterThan(3);
    for (const precision of ['bf16', 'fp16']) {
      const rel = runs[precision].map((l, i) => Math.abs(l - runs.fp32[i]) / Math.abs(runs.fp32[i]));
      expect({ precision, steps: rel.length }).toEqual({ precision, steps: runs.fp32.length });
      const summary = { precision, first: rel[0] < 1e-2, each: rel.every((r) => r < 0.1), mean: rel.reduce((a, b) => a + b, 0) / rel.length < 0.03 };
      expect({ ...summary, rel }).toEqual({ precision, first: true, each: true, mean: true, rel });
    }
  });

  test('a CUDA run replays its captured step by default and takes the eager run\'s steps', async () => {
    const eager: number[] = [], graphed: number[] = [], replayed: boolean[] = [];
    const withoutGraphs = await Trainer.create(tiny.dataset(), { ...tiny.config, device: 'cuda' }, { cudaGraphs: false });
    expect(withoutGraphs.cudaGraphs).toBe(false);
    await withoutGraphs.fit({ callbacks: { onBatchEnd: (l) => void eager.push(l.loss) } });
    const trainer = await Trainer.create(tiny.dataset(), { ...tiny.config, device: 'cuda' });
    expect(trainer.cudaGraphs).toBe(true);
    // NCE's Z moving every step would change the graph: off by default there.
    expect((await Trainer.create(tiny.dataset(), { ...tiny.config, device: 'cuda', loss: { mode: 'nce', z: 'ema' } })).cudaGraphs).toBe(false);
    await trainer.fit({ callbacks: { onBatchEnd: (l) => { graphed.push(l.loss); replayed.push(l.replayed); } } });
    expect(graphed).toHaveLength(eager.length);
    expect(replayed).toEqual(eager.map((_, i) => i > 0)); // the first step runs eagerly and captures
    graphed.forEach((l, i) => expect({ step: i, close: close(l, eager[i], 1e-3) }).toEqual({ step: i, close: true }));
  });

  test('deterministic: a CUDA run and its resume repeat an uninterrupted run bit for bit, eager and graphed', async () => {
    // A cuBLAS workspace PyTorch's deterministic mode refuses is refused by name; unset, pirl sets one it takes.
    const cublas = process.env.CUBLAS_WORKSPACE_CONFIG;
    process.env.CUBLAS_WORKSPACE_CONFIG = ':4096:2';
    expect(() => setDeterministic(true)).toThrow("CUBLAS_WORKSPACE_CONFIG must be :4096:8 or :16:8 for deterministic cuBLAS (or unset, and pirl sets it), got \":4096:2\"");
    if (cublas === undefined) delete process.env.CUBLAS_WORKSPACE_CONFIG;
    else process.env.CUBLAS_WORKSPACE_CONFIG = cublas;
    // The runs in a process of their own that turns it on first, as pirl train --deterministic does: cuBLAS reads the
    // variable once, at a process's first product on the GPU, which this one made in the tests above.
    const env = { ...process.env };
    delete env.CUBLAS_WORKSPACE_CONFIG;
    const child = (mode: string) => {
      const r = spawnSync(process.execPath, [path.join(__dirname, 'fixtures', 'deterministic-run.js'), mode, 'cuda'], { encoding: 'utf8', env, timeout: 90_000 });
      expect({ mode, status: r.status, stderr: r.status === 0 ? '' : r.stderr }).toEqual({ mode, status: 0, stderr: '' });
      return JSON.parse(r.stdout.trim().split('\n').pop()!);
    };
    const runs = child('runs') as Array<{ cudaGraphs: boolean; stopped: string; losses: number[]; resumedLosses: number[]; digest: string; resumedDigest: string }>;
    expect(runs.map((r) => r.cudaGraphs)).toEqual([false, true]);
    for (const r of runs) {
      expect({ cudaGraphs: r.cudaGraphs, stopped: r.stopped, losses: r.resumedLosses, digest: r.resumedDigest }).toEqual({ cudaGraphs: r.cudaGraphs, stopped: 'stop', losses: r.losses, digest: r.digest });
    }
    expect(runs[0].losses.length).toBeGreaterThan(4);
    // Turned on after the process's first product: the next one fails, saying the variable came too late.
    expect(child('late')).toMatch(/CUBLAS_WORKSPACE_CONFIG is :4096:8, but it was set after this process first used cuBLAS, which reads it once: turn deterministic mode on before any GPU work/);
  });

  test('a run moves between CUDA and the CPU through its checkpoint', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'run.ckpt');
    const onGpu = await Trainer.create(tiny.dataset(), { ...tiny.config, device: 'cuda' });
    await expect(onGpu.fit({ checkpoint: file, checkpointEvery: 1, callbacks: { onBatchEnd: (l) => { if (l.step === 5) throw new Error('stop'); } } })) // before step 5's checkpoint: step 4's stands
      .rejects.toThrow('stop');
    const next: Record<string, number> = {};
    for (const device of ['cpu', 'cuda'] as const) {
      const resumed = await Trainer.resume(file, tiny.dataset(), { device });
      expect(resumed.model.device.startsWith(device)).toBe(true);
      expect(resumed.bank.device.startsWith(device)).toBe(true);
      await resumed.fit({ callbacks: { onBatchEnd: (l) => void (next[device] ??= l.loss) } });
    }
    expect(close(next.cpu, next.cuda, 1e-3)).toBe(true);
    const back = await Trainer.resume(file, tiny.dataset());
    expect(back.model.device).toBe('cuda:0'); // the checkpoint's own device
  });

  test('pirl train --device cuda trains a folder of images from the CLI and records the device', async () => {
    const dir = tmpDir();
    for (const cls of ['light', 'dark']) {
      fs.mkdirSync(path.join(dir, 'data', cls), { recursive: true });
      for (let i = 0; i < 8; i++) await raw(24 + i, 24).png().toFile(path.join(dir, 'data', cls, `${i}.png`));
    }
    const cli = path.join(__dirname, '..', 'dist', 'cli.js');
    const out = path.join(dir, 'run');
    const r = spawnSync(process.execPath, [cli, 'train', path.join(dir, 'data'), '--device', 'cuda', '--width', '0.125', '--batch', '8', '--negatives', '16',
      '--epoch-length', '3', '--epochs', '1', '--size', '24', '--out', out], { encoding: 'utf8', timeout: 180_000 });
    expect({ status: r.status, stderr: r.stderr.slice(-2000) }).toEqual({ status: 0, stderr: expect.any(String) });
    const { metadata } = await readSafetensors(path.join(out, 'checkpoint.safetensors'));
    expect(JSON.parse(metadata['pirl-checkpoint']).config.device).toMatch(/^cuda(:0)?$/);
  }, 200_000);

  test('embed, datasetFeatures, knnAccuracy and nearestNeighbours work with a CUDA model', async () => {
    const data = tiny.dataset() as ArrayDataset;
    const model = await PirlModel.create({ width: 0.125, embeddingDim: 16, seed: 3 }, { device: 'cuda' });
    const reference = await PirlModel.create({ width: 0.125, embeddingDim: 16, seed: 3 });
    const a = await datasetFeatures(model, data, { size: 16 });
    const b = await datasetFeatures(reference, data, { size: 16 });
    expect(a.features.device).toBe('cpu');
    const fa = a.features.data() as Float32Array, fb = b.features.data() as Float32Array;
    // At the features' scale: pooled ReLU features near 0 carry the rounding of the large ones around them.
    const scale = fb.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    fa.forEach((v, i) => expect(Math.abs(v - fb[i])).toBeLessThanOrEqual(1e-3 * scale));
    expect(await knnAccuracy(model, data, data, { size: 16, k: 1 })).toBe(1);
    const onGpu = await a.features.to('cuda');
    const { indices } = await nearestNeighbours(onGpu, await a.features.to('cuda'), 1);
    expect(Array.from(indices.data() as BigInt64Array, Number)).toEqual(a.indices.map((_, i) => i));
    await expect(nearestNeighbours(onGpu, a.features, 1)).rejects.toThrow(/queries must be on the device of features \(cuda:0\), got "cpu"/);
    // Classifiers over CUDA features: the kNN vote there, the probe on the CPU (its features moved), as from CPU features.
    const labels = Int32Array.from(a.indices, (i) => data.labels![i]);
    expect(await knnPredict(onGpu, labels, onGpu, { k: 1 })).toEqual(labels);
    const probe = await LinearProbe.fit(onGpu, labels, { epochs: 2 });
    expect(await probe.predict(onGpu)).toEqual(await probe.predict(a.features));
    const onCpu = await LinearProbe.fit(a.features, labels, { epochs: 2 });
    expect(await onCpu.predict(a.features)).toEqual(await probe.predict(a.features));
    const bank = await MemoryBank.create({ size: 8, dim: 4, device: 'cuda' });
    expect(bank.rows().device).toBe('cuda:0');
    expect(Tensor.zeros([2], { device: 'cuda' }).device).toBe('cuda:0');
  });

  test("embedImages with reuse on a CUDA model: its weights' digest is its CPU twin's, and an unchanged folder's rows are kept", async () => {
    const dir = tmpDir('pirl-cuda-reuse-');
    try {
      for (let i = 0; i < 3; i++) await raw(20 + i, 20).png().toFile(path.join(dir, `${i}.png`));
      const model = await PirlModel.create({ arch: 'resnet18', stem: 'small', width: 0.125, seed: 5 }, { device: 'cuda' });
      const twin = await PirlModel.create({ arch: 'resnet18', stem: 'small', width: 0.125, seed: 5 });
      expect(await weightsDigest(model)).toBe(await weightsDigest(twin));
      const first = await embedImages(model, dir, { size: 16 });
      const again = await embedImages(model, dir, { size: 16, reuse: first });
      expect([again.reused, [...again.features.data()]]).toEqual([3, [...first.features.data()]]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("PirlLoss on a CUDA bank: indices given as an array (on the CPU) move to the bank's device; f on the CPU is refused by name", async () => {
    const bank = await MemoryBank.create({ size: 8, dim: 4, device: 'cuda', seed: 3 });
    const loss = new PirlLoss(bank, { negatives: 4 });
    const unit = Tensor.from(new Float32Array([1, 0, 0, 0, 0, 1, 0, 0]), [2, 4]);
    const onGpu = await unit.to('cuda');
    const r = await loss.compute(onGpu, onGpu, [0, 5]);
    expect([Number.isFinite(r.loss), r.gradF.device]).toEqual([true, 'cuda:0']);
    const generator = [...bank.state().generator.data()];
    await expect(loss.compute(unit, unit, [0, 5])).rejects.toThrow(/^f and g must be on the memory bank's device \(cuda:0\), got cpu and cpu$/);
    expect([...bank.state().generator.data()]).toEqual(generator); // refused before the draw
  });
});
