import type { LanesHandle } from '../lib/binding';
import { ArrayDataset, Loader, PirlModel, Tensor, buildInfo, datasetFeatures, disposeBatch, evalImages, type BatchSource, type Dataset, type PirlBatch } from '../lib';

describe('Loader', () => {
  const ds = new ArrayDataset(Uint8Array.from({ length: 20 * 12 * 12 * 3 }, (_, i) => (i * 7) % 256), [20, 12, 12, 3], {
    labels: Int32Array.from({ length: 20 }, (_, i) => i % 4),
  });
  const config = { imageSize: 12, jigsawSize: 12, patchSize: 4 };

  test('order: a permutation per epoch, fixed by (seed, epoch); dropLast and epochLength', () => {
    const loader = new Loader(ds, { batchSize: 6, seed: 3, config });
    const e0 = loader.batchesOf(0), again = new Loader(ds, { batchSize: 6, seed: 3, config }).batchesOf(0);
    expect(e0).toEqual(again);
    expect(e0).toHaveLength(3); // 20 / 6, last partial batch dropped
    expect(new Set(e0.flat()).size).toBe(18);
    expect(loader.batchesOf(1)).not.toEqual(e0);
    expect(new Loader(ds, { batchSize: 6, dropLast: false, config }).batchesOf(0).flat().sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(new Loader(ds, { batchSize: 6, epochLength: 2, config }).batchesOf(0)).toHaveLength(2);
    // batchesPerEpoch counts what batchesOf makes, with and without dropLast and epochLength
    for (const o of [{ batchSize: 6 }, { batchSize: 6, dropLast: false }, { batchSize: 6, epochLength: 2 }, { batchSize: 5 }]) {
      const l = new Loader(ds, { ...o, config });
      expect(l.batchesPerEpoch).toBe(l.batchesOf(0).length);
    }
    expect(new Loader(ds, { batchSize: 5, shuffle: false, config }).batchesOf(0)[0]).toEqual([0, 1, 2, 3, 4]);
  });

  test('batches: tensors of the config, labels and indices, the same for the same (seed, epoch)', async () => {
    const loader = new Loader(ds, { batchSize: 5, seed: 1, config });
    // Each batch whole: images, patches, their permutations and indices.
    const contents = (b: PirlBatch) => [b.images, b.patches, b.permutations, b.indices].map((t) => Buffer.from(t.data().buffer).toString('base64'));
    const first: string[][] = [];
    for await (const b of loader.epoch(0)) {
      expect(b.images.shape).toEqual([5, 3, 12, 12]);
      expect(b.patches.shape).toEqual([5, 9, 3, 4, 4]);
      const idx = Array.from(b.indices.data() as BigInt64Array, Number);
      expect(Array.from(b.labels!)).toEqual(idx.map((i) => i % 4));
      first.push(contents(b));
    }
    expect(first).toHaveLength(4);
    const second: string[][] = [];
    for await (const b of new Loader(ds, { batchSize: 5, seed: 1, config }).epoch(0)) second.push(contents(b));
    expect(second).toEqual(first);
    const otherSeed: string[][] = [];
    for await (const b of new Loader(ds, { batchSize: 5, seed: 2, config }).epoch(0)) otherSeed.push(contents(b));
    expect(otherSeed).not.toEqual(first);
  });

  test("the photometric step: 'all' and 'one' apply other ops than each other and than none (p = 1)", async () => {
    const only = { ...config, photometricProbability: 1, grayscaleProbability: 0, brightness: 0, contrast: 0, saturation: 0, hue: 0 };
    const images = async (photometricOps: 'one' | 'all') => {
      const loader = new Loader(ds, { batchSize: 5, seed: 4, config: { ...only, photometricOps } });
      return Array.from((await loader.makeBatch([0, 1, 2, 3, 4], 0)).images.data() as Float32Array);
    };
    const [one, all, none] = [await images('one'), await images('all'), Array.from((await new Loader(ds, { batchSize: 5, seed: 4, config: { ...only, photometricProbability: 0 } }).makeBatch([0, 1, 2, 3, 4], 0)).images.data() as Float32Array)];
    expect(one).not.toEqual(all);
    expect(one).not.toEqual(none);
    expect(all).not.toEqual(none);
  });

  test('at most `prefetch` batches are made ahead', async () => {
    let active = 0, peak = 0;
    const slow = {
      length: ds.length, labels: null, classes: null,
      async batchSource(indices: readonly number[]) {
        active++;
        peak = Math.max(peak, active);
        await new Promise((r) => setTimeout(r, 5));
        active--;
        return ds.batchSource(indices);
      },
    };
    const loader = new Loader(slow, { batchSize: 2, prefetch: 3, config });
    for await (const b of loader.epoch(0)) {
      expect(b.images.shape[0]).toBe(2);
      await new Promise((r) => setTimeout(r, 10)); // a slow consumer
    }
    expect(peak).toBeLessThanOrEqual(3);
    expect(peak).toBeGreaterThanOrEqual(2);
  });

  test("a user's Dataset is held to what it answers: the samples asked, each once, a row each; a label per sample", async () => {
    // A Dataset of one's own (a database): batchSource answers as told.
    const custom = (answer: (asked: readonly number[], real: BatchSource) => unknown, labels: Int32Array | null = null): Dataset => ({
      length: 20, labels, classes: null,
      batchSource: async (asked) => answer(asked, await ds.batchSource(asked)) as BatchSource,
    });
    const first = (d: Dataset) => new Loader(d, { batchSize: 5, shuffle: false, config }).makeBatch([0, 1, 2, 3, 4], 0);
    await expect(first(custom((_, real) => ({ ...real, indices: [0, 0, 0, 0, 0] })))).rejects.toThrow(
      "dataset.batchSource() of 5 indices (0, 1, 2, …)'s indices must be some of the indices asked, each once, got 0");
    await expect(first(custom((_, real) => ({ ...real, indices: [0, 1, 2, 3, 9] })))).rejects.toThrow(/must be some of the indices asked, each once, got 9/);
    await expect(first(custom((_, real) => ({ ...real, indices: [0, 1] })))).rejects.toThrow(
      "dataset.batchSource() of 5 indices (0, 1, 2, …)'s rows must be one per index present (2), got \"5 rows\"");
    await expect(first(custom((_, real) => ({ ...real, rows: Tensor.from(new BigInt64Array([0n, 1n, 2n, 3n, 99n]), [5]) })))).rejects.toThrow(
      `dataset.batchSource() of 5 indices (0, 1, 2, …)'s rows must be rows of its source, in [0, ${ds.length}), got 99`); // it was "rows must be in [0, 20)"
    await expect(first(custom((_, real) => ({ ...real, source: Tensor.zeros([5, 8, 8, 3]) })))).rejects.toThrow(
      "dataset.batchSource() of 5 indices (0, 1, 2, …)'s source must be a uint8 N×H×W×C CPU tensor, C = 1 or 3, got \"float32 [5, 8, 8, 3] on cpu\"");
    const gone = Tensor.zeros([5, 8, 8, 3], { dtype: 'uint8' });
    gone.dispose();
    await expect(first(custom((_, real) => ({ ...real, source: gone })))).rejects.toThrow(
      "dataset.batchSource() of 5 indices (0, 1, 2, …)'s source must be a live Tensor, got \"a disposed one\"");
    await expect(first(custom(() => undefined))).rejects.toThrow(
      "dataset.batchSource() of 5 indices (0, 1, 2, …)'s answer must be { source: Tensor, rows: Tensor, indices: number[] }, got undefined");
    await expect(first(custom(() => Promise.reject('ECONNRESET')))).rejects.toThrow('dataset.batchSource() of 5 indices (0, 1, 2, …) failed with "ECONNRESET"');
    await expect(first(custom((_, real) => ({ ...real, owned: 'yes' })))).rejects.toThrow(
      "dataset.batchSource() of 5 indices (0, 1, 2, …)'s owned must be a boolean or undefined, got \"yes\"");
    // Fewer samples than asked (unreadable ones left out) are fine.
    const fewer = await first(custom((asked) => ds.batchSource(asked.slice(1))));
    expect([...fewer.indices.data()].map(Number)).toEqual([1, 2, 3, 4]);
    // Labels: one per sample, checked before any work (a short array scored kNN against label 0).
    const short = custom((_, real) => real, Int32Array.from({ length: 12 }, () => 1));
    expect(() => new Loader(short, { batchSize: 5, config })).toThrow('dataset.labels must be one label per sample (20), got "12 labels"');
    // Its length an integer, named as the data set's (it was found as the memory bank's options.size).
    expect(() => new Loader({ ...short, length: 31.5, labels: null }, { batchSize: 5, config })).toThrow('dataset.length must be an integer >= 0, got 31.5');
    // An Int32Array of labels >= 0 (an array of [0, 0.5, 'a'] scored kNN against labels 0 and 0).
    expect(() => new Loader({ ...short, labels: [0, 0.5, 'a'] as never }, { batchSize: 5, config })).toThrow('dataset.labels must be an Int32Array (one label per sample) or null, got [0, 0.5, "a"]');
    expect(() => new Loader({ ...short, labels: Int32Array.from({ length: 20 }, (_, i) => 3 - i) }, { batchSize: 5, config })).toThrow('dataset.labels[4] must be a label >= 0, got -1');
    const model = await PirlModel.create({ width: 0.125 });
    await expect(datasetFeatures(model, short, { size: 12 })).rejects.toThrow('dataset.labels must be one label per sample (20), got "12 labels"');
  });

  test('images stored at half the views or less are warned of once per loader (each view an upscaled blur); larger ones are not', async () => {
    const emit = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const sized = (side: number) => new ArrayDataset(new Uint8Array(4 * side * side * 3), [4, side, side, 3]);
      const small = new Loader(sized(18), { batchSize: 2, config: 'small' });
      await small.makeBatch([0, 1], 0);
      await small.makeBatch([2, 3], 0);
      await new Loader(sized(19), { batchSize: 2, config: 'small' }).makeBatch([0], 0);
      await new Loader(sized(64), { batchSize: 2, config: 'paper' }).makeBatch([0], 0);
      expect(emit.mock.calls.map(([message, options]) => [(options as { code: string }).code, message])).toEqual([['PIRL_UPSCALED_VIEWS',
        "the data set's images are 18×18 px and the sampler's views 32 px (jigsaw crops 36): each view is upscaled 2× or more, a blur to train on. " +
          "Store the images at 64 px (ImageFolder's size, pirl train --size)"], ['PIRL_UPSCALED_VIEWS',
        "the data set's images are 64×64 px and the sampler's views 224 px (jigsaw crops 255): each view is upscaled 3× or more, a blur to train on. " +
          "Store the images at 292 px (ImageFolder's size, pirl train --size), or take the sampler for small images (the 'small' preset)"],
      ]);
    } finally {
      emit.mockRestore();
    }
  });

  test('a source made for its batch alone (owned) is disposed once the batch is made; a data set\'s own tensor is left alone', async () => {
    const answers: BatchSource[] = [];
    const copying: Dataset = {
      length: 20, labels: null, classes: null,
      batchSource: async (asked) => {
        const real = await ds.batchSource(asked);
        const pixels = (real.source.data() as Uint8Array).slice(); // a copy: this answer's alone
        answers.push({ ...real, source: Tensor.from(pixels, real.source.shape), owned: true });
        return answers[answers.length - 1];
      },
    };
    const made = await new Loader(copying, { batchSize: 5, shuffle: false, config }).makeBatch([0, 1, 2, 3, 4], 0);
    const same = await new Loader(ds, { batchSize: 5, shuffle: false, config }).makeBatch([0, 1, 2, 3, 4], 0);
    expect(made.images.data()).toEqual(same.images.data());
    expect(answers.map((a) => [a.source.disposed, a.rows.disposed])).toEqual([[true, true]]);
    await evalImages(copying, [0, 1], 12);
    expect(answers.map((a) => [a.source.disposed, a.rows.disposed])).toEqual([[true, true], [true, true]]);
    expect((await ds.batchSource([0])).source.disposed).toBe(false); // ArrayDataset's images, used by both loaders
    expect(() => disposeBatch(undefined as never)).toThrow('batch must be an object, got undefined');
    expect(() => disposeBatch({ ...same, patches: null } as never)).toThrow('batch.patches must be a Tensor (a batch from a Loader), got null');
    disposeBatch(same);
    expect([same.images, same.patches, same.permutations, same.indices].every((t) => t.disposed)).toBe(true);
  });

  test('a loop that ends early (a break) frees the batches made ahead, which it never got', async () => {
    const loader = new Loader(ds, { batchSize: 2, prefetch: 4, config });
    const made: PirlBatch[] = [];
    const makeBatch = loader.makeBatch.bind(loader);
    loader.makeBatch = async (...args) => made[made.push(await makeBatch(...args)) - 1];
    let kept: PirlBatch | undefined;
    for await (const b of loader.epoch(0)) {
      kept = b;
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 200)); // the batches in flight come
    expect(made.length).toBe(5); // the first and the four made ahead, done in any order
    expect(made.map((b) => b.images.disposed)).toEqual(made.map((b) => b !== kept)); // the loop's own left to it
  });

  test('the memory kept for the next batches is freed once the loader has been idle a second after an epoch', async () => {
    const loader = new Loader(ds, { batchSize: 5, config, prefetch: 2 });
    const kept = () => (loader as unknown as { lanes: LanesHandle }).lanes.keptBuffers();
    for (let e = 0; e < 2; e++) for await (const b of loader.epoch(e)) disposeBatch(b);
    // The disposed batches' buffers come back (freed on a thread of their own) and are kept for the next epoch.
    const start = Date.now();
    while (kept() === 0 && Date.now() - start < 900) await new Promise((r) => setTimeout(r, 20));
    expect(kept()).toBeGreaterThan(0);
    // Another epoch started within the second puts the freeing off: 1.2 s after the first ended, all is kept.
    await new Promise((r) => setTimeout(r, 600 - (Date.now() - start)));
    for await (const b of loader.epoch(2)) disposeBatch(b);
    await new Promise((r) => setTimeout(r, 600));
    expect(kept()).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 1000));
    expect(kept()).toBe(0);
  });

  test('options are validated', () => {
    // The same checks as a training run's options (config.ts's LOADER): a seed of 2^32 had repeated seed 0's order.
    expect(() => new Loader(ds, { batchSize: 0 })).toThrow(/^options.batchSize must be an integer in \[1, 65536\], got 0$/);
    expect(() => new Loader(ds, { batchSize: 4, seed: 2 ** 32 })).toThrow(/^options.seed must be an integer in \[0, 4294967295\], got 4294967296$/);
    expect(() => new Loader(ds, { batchSize: 4, prefetch: 65 })).toThrow(/^options.prefetch must be an integer in \[1, 64\], got 65$/);
    expect(() => new Loader(ds, { batchSize: 4, shard: { rank: 2, count: 2 } })).toThrow(/^options.shard.rank must be an integer in \[0, 1\], got 2$/);
    expect(() => new Loader(ds, { batchSize: 4, shard: { rank: 0, count: 2 }, dropLast: false })).toThrow(/^options.dropLast must be true when the data is sharded/);
    expect(() => new Loader(ds, { batchSize: 4, shard: { rank: 1 } as never })).toThrow(/^options.shard.count must be an integer >= 1, got undefined$/); // both or neither
    // Left out: the default recipe's batch (128) where the data has it, and the 'small' preset.
    const big = new ArrayDataset(new Uint8Array(200 * 4 * 4 * 3), [200, 4, 4, 3]);
    expect([new Loader(big).batchSize, new Loader(big).config.imageSize]).toEqual([128, 32]);
    expect(() => new Loader(ds, { config: { jigsawSize: 10 } })).toThrow(/config.jigsawSize must be a multiple of 3, got 10/);
    expect(() => new Loader(ds, { config: { patchSize: 20 } })).toThrow(/config.patchSize must be at most jigsawSize\/3 = 12, got 20/);
    expect(() => new Loader(ds, { config: { hue: 0.9 } })).toThrow(/config.hue must be a number in \[0, 0.5\], got 0.9/);
    expect(() => new Loader(ds, { config: 'huge' as never })).toThrow(/config.preset must be 'paper' or 'small', got "huge"/);
    if (!buildInfo().cuda.available) expect(() => new Loader(ds, { pinMemory: true })).toThrow(/options.pinMemory must be false where no CUDA device is usable/);
    expect(() => new Loader(ds, { device: 'gpu' as never })).toThrow(/options.device must be 'cpu', 'cuda' or 'cuda:N', got "gpu"/);
    if (!buildInfo().cuda.compiled) expect(() => new Loader(ds, { device: 'cuda' })).toThrow(/options.device is 'cuda', but the libtorch pirl runs on .* has no CUDA/);
    expect(new Loader(ds, { batchSize: 4 }).device).toBe('cpu');
    expect(() => new Loader({} as never)).toThrow(/dataset must be a Dataset/);
  });

  test('an epoch is one integer in [0, 2^32 − 1] wherever the loader takes one (1.5 made epoch 1\'s order, 2^32 epoch 0\'s); a step is named', async () => {
    const loader = new Loader(ds, { batchSize: 5, seed: 3, config });
    const bound = 'epoch must be an integer in [0, 4294967295]';
    expect(() => loader.batchesOf('x' as never)).toThrow(`${bound}, got "x"`);
    expect(() => loader.batchesOf(1.5)).toThrow(`${bound}, got 1.5`);
    expect(() => loader.batchesOf(-1)).toThrow(`${bound}, got -1`);
    expect(() => loader.batchesOf(2 ** 32)).toThrow(`${bound}, got 4294967296`);
    expect(loader.batchesOf(2 ** 32 - 1)).not.toEqual(loader.batchesOf(0));
    await expect(loader.epoch(2 ** 32).next()).rejects.toThrow(`${bound}, got 4294967296`);
    await expect(loader.epochFrom(-1, 0).next()).rejects.toThrow(`${bound}, got -1`);
    await expect(loader.makeBatch([0, 1], 2 ** 32)).rejects.toThrow(`${bound}, got 4294967296`);
    await expect(loader.makeBatch([0, 1], undefined as never)).rejects.toThrow(`${bound}, got undefined`);
    // The step picks the batch's lane: it was refused as "lane must be in [0, 2), got -1".
    await expect(loader.makeBatch([0, 1], 0, -1)).rejects.toThrow('step must be an integer >= 0, got -1');
    await expect(loader.makeBatch([0, 1], 0, 1.5)).rejects.toThrow('step must be an integer >= 0, got 1.5');
    // A sample twice is the caller's to hear of, not the data set's answer's ("…'s indices must be some of the indices asked").
    await expect(loader.makeBatch([0, 0], 0)).rejects.toThrow('indices[1] must be a sample not already at indices[0] (each sample once), got 0');
    await expect(loader.makeBatch([], 0)).rejects.toThrow(/^indices must be at least one sample index, got \[\]$/);
    await expect(evalImages(ds, [3, 3], 12)).rejects.toThrow('indices[1] must be a sample not already at indices[0] (each sample once), got 3');
    await expect(evalImages(ds, [3], 60_000)).rejects.toThrow(/^size must be an integer in \[1, 4096\], got 60000$/);
    await expect(loader.makeBatch([0, 20], 0)).rejects.toThrow('indices must be integers in [0, 20), got 20');
    const made = await loader.makeBatch([0, 1], 2 ** 32 - 1, 3);
    expect([made.epoch, made.step]).toEqual([2 ** 32 - 1, 3]);
    disposeBatch(made);
  });

  test('a misspelt option is an error naming the options there are', () => {
    expect(() => new Loader(ds, { batchsize: 4 } as never)).toThrow(/^options\.batchsize is not an option; options takes batchSize, shuffle, dropLast, .*, shard \(did you mean batchSize\?\)$/);
    expect(() => new Loader(ds, { batchSize: 4, shard: { rank: 0, count: 1, ranks: 2 } as never })).toThrow(/options\.shard\.ranks is not an option; options\.shard takes rank, count/);
    expect(() => new Loader(ds, null as never)).toThrow(/options must be an object, got null/);
  });

  test('a batch larger than the data set with dropLast is an argument error on options.batchSize', () => {
    let caught: unknown;
    try {
      new Loader(ds, { batchSize: 50 });
    } catch (err) {
      caught = err;
    }
    // An argument error, so the CLI's asFlags names --batch.
    expect(caught).toBeInstanceOf(RangeError);
    expect(caught).toMatchObject({ argument: 'options.batchSize', received: 50 });
    expect((caught as Error).message).toBe("options.batchSize must be at most 20 (the data set's 20 samples: dropLast drops incomplete batches, so a larger batch leaves none), got 50");
    expect(() => new Loader(ds, { batchSize: 11, shard: { rank: 0, count: 2 } })).toThrow(/options\.batchSize must be at most 10 \(the data set's 20 samples over 2 ranks: .*\), got 11/);
    expect(new Loader(ds, { batchSize: 50, dropLast: false }).batchesPerEpoch).toBe(1);
  });

  test('evalImages: the whole image, resized and normalised', async () => {
    const { images, indices } = await evalImages(ds, [3, 4], 16);
    expect(images.shape).toEqual([2, 3, 16, 16]);
    expect(indices).toEqual([3, 4]);
    // A solid image stays solid at any size: each channel (v/255 − ImageNet's mean) / its std.
    const rgb = [100, 150, 50];
    const solid = new ArrayDataset(Uint8Array.from({ length: 12 * 12 * 3 }, (_, i) => rgb[i % 3]), [1, 12, 12, 3]);
    const values = (await evalImages(solid, [0], 16)).images.data() as Float32Array;
    const mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225];
    const expected = Float32Array.from({ length: 3 * 16 * 16 }, (_, i) => { const c = Math.floor(i / 256); return (rgb[c] / 255 - mean[c]) / std[c]; });
    expect(Math.max(...values.map((v, i) => Math.abs(v - expected[i])))).toBeLessThan(1e-5);
  });
});
