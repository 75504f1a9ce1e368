import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { ArrayDataset, Tensor, Trainer, datasetFeatures, evalImages, knnAccuracy, linearProbeAccuracy, lrAt, nearestNeighbours, resolveSamplerConfig, type BatchLogs } from '../lib';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const tiny = require('./fixtures/tiny-run.js') as { dataset(): import('../lib').Dataset; config: import('../lib').TrainConfig };
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-train-'));

async function uninterruptedLosses(): Promise<number[]> {
  const losses: number[] = [];
  const trainer = await Trainer.create(tiny.dataset(), tiny.config);
  await trainer.fit({ callbacks: { onBatchEnd: (l) => void losses.push(l.loss) } });
  return losses;
}

describe('learning-rate schedule', () => {
  const s = { baseLr: 0.03, batchSize: 512, totalSteps: 101, warmupSteps: 10, finalRatio: 1e-3 };
  test('linear warm-up to base·batch/256, cosine down to 1/1000 of it', () => {
    expect(lrAt(s, 0)).toBeCloseTo(0.006, 10);
    expect(lrAt(s, 9)).toBeCloseTo(0.06, 10);
    expect(lrAt(s, 10)).toBeCloseTo(0.06, 10);
    expect(lrAt(s, 100)).toBeCloseTo(0.06e-3, 10);
    expect(lrAt(s, 55)).toBeCloseTo(0.06e-3 + (0.06 - 0.06e-3) * 0.5, 10);
    for (let i = 11; i < 101; i++) expect(lrAt(s, i)).toBeLessThan(lrAt(s, i - 1));
  });
});

describe('Trainer', () => {
  let reference: number[];
  beforeAll(async () => {
    reference = await uninterruptedLosses();
  });

  test('fit calls back with loss, lr and img/s, epoch by epoch', async () => {
    const events: string[] = [];
    const batches: BatchLogs[] = [];
    const trainer = await Trainer.create(tiny.dataset(), tiny.config);
    await trainer.fit({
      callbacks: {
        onTrainBegin: (i) => void events.push(`begin ${i.epochs}x${i.stepsPerEpoch}`),
        onEpochBegin: (e) => void events.push(`epoch ${e}`),
        onBatchEnd: (l) => void batches.push(l),
        onEpochEnd: (l) => void events.push(`end ${l.epoch}`),
        onTrainEnd: (l) => void events.push(`done ${l.steps}`),
      },
    });
    expect(events).toEqual(['begin 3x3', 'epoch 0', 'end 0', 'epoch 1', 'end 1', 'epoch 2', 'end 2', 'done 9']);
    expect(batches.map((b) => b.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    for (const b of batches) {
      expect(Number.isFinite(b.loss) && b.lr > 0 && b.imagesPerSecond > 0 && b.gradNorm > 0).toBe(true);
    }
    expect(batches.map((b) => b.loss)).toEqual(reference); // same seed, same run
  });

  test('resume from a checkpoint continues with exactly the losses of an uninterrupted run', async () => {
    const file = path.join(tmp(), 'run.ckpt');
    const first = await Trainer.create(tiny.dataset(), tiny.config);
    // Stop after step 4 (mid-epoch 1) by throwing from the callback; the step-4 checkpoint exists.
    await expect(first.fit({
      checkpoint: file, checkpointEvery: 1,
      callbacks: { onBatchEnd: (l) => { if (l.step === 4) throw new Error('stop'); } },
    })).rejects.toThrow('stop');
    const resumed = await Trainer.resume(file, tiny.dataset());
    expect(resumed.progress).toEqual({ epoch: 1, stepInEpoch: 1, step: 4 });
    const losses: number[] = [];
    await resumed.fit({ callbacks: { onBatchEnd: (l) => void losses.push(l.loss) } });
    expect(losses).toEqual(reference.slice(4));
  });

  test('resume after the training process was killed mid-epoch', async () => {
    const file = path.join(tmp(), 'killed.ckpt');
    const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'tiny-run.js'), file], { stdio: ['ignore', 'pipe', 'inherit'] });
    const seen: Array<{ step: number; loss: number }> = [];
    await new Promise<void>((resolve) => {
      let buffer = '';
      child.stdout!.on('data', (chunk: Buffer) => {
        buffer += chunk.toString();
        const lines = buffer.split('\n');
        buffer = lines.pop()!;
        for (const line of lines) seen.push(JSON.parse(line));
        if (seen.length >= 5) child.kill('SIGKILL');
      });
      child.on('exit', () => resolve());
    });
    expect(seen.map((s) => s.loss)).toEqual(reference.slice(0, seen.length)); // another process, the same run
    const resumed = await Trainer.resume(file, tiny.dataset());
    const from = resumed.progress.step;
    expect(from).toBeGreaterThanOrEqual(5);
    expect(from).toBeLessThan(9); // killed before the run's last step
    const losses: number[] = [];
    await resumed.fit({ callbacks: { onBatchEnd: (l) => void losses.push(l.loss) } });
    expect(losses).toEqual(reference.slice(from));
  });

  test('a non-finite gradient stops training with a clear error; the last good checkpoint stays', async () => {
    const file = path.join(tmp(), 'nan.ckpt');
    const trainer = await Trainer.create(tiny.dataset(), { ...tiny.config, baseLr: 1e12, warmupEpochs: 0 });
    const steps: number[] = [];
    await expect(trainer.fit({ checkpoint: file, checkpointEvery: 1, callbacks: { onBatchEnd: (l) => void steps.push(l.step) } }))
      .rejects.toThrow(/non-finite (gradient|loss).*training stopped/);
    expect(steps.length).toBeGreaterThanOrEqual(1);
    const resumed = await Trainer.resume(file, tiny.dataset());
    expect(resumed.progress.step).toBe(steps[steps.length - 1]);
  });

  test("bankInit 'features' starts each bank row at the sample's normalised f embedding (eval transform)", async () => {
    const dataset = tiny.dataset();
    const trainer = await Trainer.create(dataset, { ...tiny.config, bankInit: 'features' });
    const all = Array.from({ length: dataset.length }, (_, i) => i);
    const { images } = await evalImages(dataset, all, resolveSamplerConfig(tiny.config.sampler).imageSize);
    const f = (await trainer.model.embed(images, { layer: 'f' })).data() as Float32Array;
    const rows = trainer.bank.rows().data() as Float32Array;
    const dim = trainer.bank.dim;
    for (let i = 0; i < dataset.length; i++) {
      const row = f.subarray(i * dim, (i + 1) * dim);
      const norm = Math.hypot(...row);
      for (let d = 0; d < dim; d++) expect(rows[i * dim + d]).toBeCloseTo(row[d] / norm, 5);
    }
    const random = await Trainer.create(dataset, { ...tiny.config, bankInit: 'random' });
    expect(Math.abs((random.bank.rows().data() as Float32Array)[0] - rows[0])).toBeGreaterThan(1e-6);
  });

  test('config and checkpoint errors are clear', async () => {
    await expect(Trainer.create(tiny.dataset(), { ...tiny.config, bankInit: 'zeros' as 'random' })).rejects.toThrow(/config.bankInit must be 'random' or 'features', got "zeros"/);
    await expect(Trainer.create(tiny.dataset(), { ...tiny.config, epochs: 0 })).rejects.toThrow(/config.epochs must be an integer in \[1, 1000000\], got 0/);
    await expect(Trainer.create(tiny.dataset(), { ...tiny.config, baseLr: -1 })).rejects.toThrow(/config.baseLr must be a number >= 0, got -1/);
    const file = path.join(tmp(), 'model.safetensors');
    const trainer = await Trainer.create(tiny.dataset(), tiny.config);
    await trainer.model.save(file);
    await expect(Trainer.resume(file, tiny.dataset())).rejects.toThrow(/not a pirl training checkpoint/);
  });
});

describe('evaluation', () => {
  test('kNN and the linear probe score a trained trunk on labeled data; options are checked', async () => {
    const trainer = await Trainer.create(tiny.dataset(), { ...tiny.config, epochs: 1 });
    const data = tiny.dataset();
    const knn = await knnAccuracy(trainer.model, data, data, { size: 16, k: 5 });
    const probe = await linearProbeAccuracy(trainer.model, data, data, { size: 16, epochs: 20 });
    for (const a of [knn, probe]) expect(a >= 0 && a <= 1).toBe(true);
    // Evaluated on its own training set, a 1-nearest-neighbour classifier finds each sample itself.
    expect(await knnAccuracy(trainer.model, data, data, { size: 16, k: 1 })).toBe(1);
    expect(await knnAccuracy(trainer.model, data, data, { size: 16, k: 1, layer: 'f' })).toBe(1);
    await expect(knnAccuracy(trainer.model, data, data, { size: 16, layer: 'res4' as 'f' })).rejects.toThrow(/options.layer must be 'res5' or 'f', got "res4"/);
    await expect(linearProbeAccuracy(trainer.model, data, data, { size: 16, lr: 0 })).rejects.toThrow(/options.lr must be a positive number, got 0/);
    await expect(knnAccuracy(trainer.model, data, data, { size: 16, k: 0 })).rejects.toThrow(/options.k must be an integer in \[1, 1000000\], got 0/);
  });

  test('nearestNeighbours returns the most cosine-similar rows, best first, as a full sort finds them', async () => {
    const n = 40, q = 3, width = 5, k = 4;
    const rows = Float32Array.from({ length: n * width }, (_, i) => Math.sin(i * 12.9898) * 43758.5453 % 1);
    const queries = Float32Array.from({ length: q * width }, (_, i) => Math.cos(i * 78.233) * 12345.678 % 1);
    const { indices, similarities } = await nearestNeighbours(Tensor.from(rows, [n, width]), Tensor.from(queries, [q, width]), k);
    expect(indices.shape).toEqual([q, k]);
    const cosine = (a: Float32Array, b: Float32Array) => a.reduce((s, x, i) => s + x * b[i], 0) / Math.hypot(...a) / Math.hypot(...b);
    for (let j = 0; j < q; j++) {
      const query = queries.subarray(j * width, (j + 1) * width);
      const ranked = Array.from({ length: n }, (_, i) => [cosine(rows.subarray(i * width, (i + 1) * width), query), i]).sort((a, b) => b[0] - a[0]);
      for (let r = 0; r < k; r++) {
        expect(Number((indices.data() as BigInt64Array)[j * k + r])).toBe(ranked[r][1]);
        expect((similarities.data() as Float32Array)[j * k + r]).toBeCloseTo(ranked[r][0], 5);
      }
    }
    await expect(nearestNeighbours(Tensor.from(rows, [n, width]), Tensor.from(queries.subarray(0, 8), [2, 4]), 1)).rejects.toThrow(/queries must be rows of 5 features like features, got \[2, 4\]/);
    await expect(nearestNeighbours(Tensor.from(rows, [n * width]), Tensor.from(queries, [q, width]), 1)).rejects.toThrow(/features must be a 2-D float Tensor/);
    await expect(nearestNeighbours(Tensor.from(rows, [n, width]), Tensor.from(queries, [q, width]), 0)).rejects.toThrow(/k must be an integer >= 1, got 0/);
  });

  test('datasetFeatures embeds unlabeled data too, naming the row of each feature', async () => {
    const trainer = await Trainer.create(tiny.dataset(), { ...tiny.config, epochs: 1 });
    const pixels = (tiny.dataset() as ArrayDataset).source.data() as Uint8Array;
    const unlabeled = new ArrayDataset(pixels.subarray(0, 5 * 16 * 16 * 3), [5, 16, 16, 3]);
    const { features, indices, labels } = await datasetFeatures(trainer.model, unlabeled, { size: 16, batchSize: 2 });
    expect(features.shape).toEqual([5, trainer.model.featureDim]);
    expect(indices).toEqual([0, 1, 2, 3, 4]);
    expect(labels).toBeNull();
  });
});
