import { ArrayDataset, Tensor, Trainer, datasetFeatures, knnAccuracy, linearProbeAccuracy, nearestNeighbours } from '../lib';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const tiny = require('./fixtures/tiny-run.js') as { dataset(): import('../lib').Dataset; config: import('../lib').TrainConfig };

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
    // Progress: after each batch, samples done of both passes (train, then test), ending at the total.
    const told: Array<[number, number]> = [];
    await knnAccuracy(trainer.model, data, data, { size: 16, k: 1, batchSize: 20 }, (done, total) => void told.push([done, total]));
    expect(told).toEqual([[20, 96], [40, 96], [48, 96], [68, 96], [88, 96], [96, 96]]);
    await expect(knnAccuracy(trainer.model, data, data, { size: 16, layer: 'res4' as 'f' })).rejects.toThrow(/options.layer must be 'res5' or 'f', got "res4"/);
    await expect(linearProbeAccuracy(trainer.model, data, data, { size: 16, lr: 0 })).rejects.toThrow(/options.lr must be a positive number, got 0/);
    await expect(knnAccuracy(trainer.model, data, data, { size: 16, k: 0 })).rejects.toThrow(/options.k must be an integer in \[1, 1000000\], got 0/);
  });

  test("a test set of fewer classes is scored by its classes' names, not by their places among its folders", async () => {
    const trainer = await Trainer.create(tiny.dataset(), { ...tiny.config, epochs: 1 });
    const base = tiny.dataset() as ArrayDataset;
    const pixels = base.source.data() as Uint8Array, labels = base.labels!, sample = 16 * 16 * 3;
    const train = new ArrayDataset(pixels, [48, 16, 16, 3], { labels, classes: ['a', 'b', 'c'] });
    // Classes b and c alone, labelled 0 and 1 as an ImageFolder of those two folders would.
    const kept = Array.from({ length: 48 }, (_, i) => i).filter((i) => labels[i] > 0);
    const subset = new Uint8Array(kept.length * sample);
    kept.forEach((i, j) => subset.set(pixels.subarray(i * sample, (i + 1) * sample), j * sample));
    const test = (classes: string[]) => new ArrayDataset(subset, [kept.length, 16, 16, 3], { labels: Int32Array.from(kept, (i) => labels[i] - 1), classes });
    // Each test image is in train: its nearest neighbour is itself, of the same class.
    expect(await knnAccuracy(trainer.model, train, test(['b', 'c']), { size: 16, k: 1 })).toBe(1);
    expect(await linearProbeAccuracy(trainer.model, train, test(['b', 'c']), { size: 16, epochs: 1 })).toBeGreaterThanOrEqual(0);
    await expect(knnAccuracy(trainer.model, train, test(['b', 'coat']), { size: 16, k: 1 })).rejects.toThrow(`test must be a data set of train's classes (a, b, c), got ["coat"]`);
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
    // kNN and the probe need labels on both sides, checked before anything is embedded.
    const told: number[] = [];
    for (const [train, test, name] of [[unlabeled, tiny.dataset(), 'train'], [tiny.dataset(), unlabeled, 'test']] as const) {
      await expect(knnAccuracy(trainer.model, train, test, { size: 16 }, (done) => void told.push(done))).rejects.toThrow(`${name} must be a labeled data set, got "unlabeled data"`);
      await expect(linearProbeAccuracy(trainer.model, train, test, { size: 16 }, (done) => void told.push(done))).rejects.toThrow(`${name} must be a labeled data set`);
    }
    expect(told).toEqual([]);
  });
});
