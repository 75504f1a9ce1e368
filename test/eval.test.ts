import { getEventListeners } from 'events';
import * as fs from 'fs';
import * as path from 'path';

import { ArrayDataset, ImageFolder, PirlModel, Subset, Tensor, Trainer, datasetFeatures, embedImages, evaluateTrunk, featureOptionsFor, knnAccuracy, knnPredict, LinearProbe, linearProbeAccuracy, readSafetensors, writeSafetensors, nearestNeighbours, weightsDigest, loadImageFeatures, saveImageFeatures } from '../lib';
import { folderFeatures } from '../lib/eval/embed';
import { raw, tmpDir } from './helpers';

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
    expect(told).toEqual([[0, 96], [20, 96], [40, 96], [48, 96], [68, 96], [88, 96], [96, 96]]); // 0 as the passes begin
    // options.signal aborted stops a pass before its next batch (in the test set's too): rejected as aborted.
    for (const stopAt of [40, 68, 96]) { // 96: during the last batch, which ends the pass, before the vote
      const seen: number[] = [];
      const stop = new AbortController();
      await expect(knnAccuracy(trainer.model, data, data, { size: 16, k: 1, batchSize: 20, signal: stop.signal }, (done) => {
        seen.push(done);
        if (done === stopAt) stop.abort('enough');
      })).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR', message: 'the feature pass was stopped: its signal was aborted', cause: 'enough' });
      expect(seen).toEqual(told.map(([done]) => done).filter((done) => done <= stopAt));
    }
    const aborted = AbortSignal.abort();
    await expect(datasetFeatures(trainer.model, data, { signal: aborted })).rejects.toMatchObject({ code: 'ABORT_ERR' });
    await expect(linearProbeAccuracy(trainer.model, data, data, { size: 16, signal: aborted })).rejects.toMatchObject({ code: 'ABORT_ERR' });
    await expect(knnAccuracy(trainer.model, data, data, { size: 16, signal: 'stop' as never })).rejects.toThrow('options.signal must be an AbortSignal, got "stop"');
    // A callback that is not one is refused before the pass, not after its first batch.
    await expect(datasetFeatures(trainer.model, data, {}, 'log' as never)).rejects.toThrow(/^onProgress must be a function, got "log"$/);
    await expect(datasetFeatures(trainer.model, {} as never)).rejects.toThrow(/^dataset must be a Dataset \(ArrayDataset, IdxDataset, ImageFolder\), got an object$/);
    await expect(knnAccuracy(trainer.model, data, null as never)).rejects.toThrow(/^test must be a Dataset .*got null$/);
    await expect(knnAccuracy(trainer.model, data, data, { size: 16 }, 1 as never)).rejects.toThrow(/^onProgress must be a function, got 1$/);
    await expect(knnAccuracy(trainer.model, data, data, { size: 16, layer: 'res4' as 'f' })).rejects.toThrow(/options.layer must be 'res5' or 'f', got "res4"/);
    await expect(linearProbeAccuracy(trainer.model, data, data, { size: 16, lr: 0 })).rejects.toThrow(/options.lr must be a positive number, got 0/);
    await expect(knnAccuracy(trainer.model, data, data, { size: 16, k: 0 })).rejects.toThrow(/options.k must be an integer in \[1, 1000000\], got 0/);
    // Both protocols from one feature pass each: the numbers of the two functions, half the progress.
    const passes: number[] = [];
    const both = await evaluateTrunk(trainer.model, data, data, { knn: { size: 16, k: 5 }, linearProbe: { epochs: 20 } }, (done) => void passes.push(done));
    expect(both).toEqual({ knnTop1: knn, linearProbeTop1: probe });
    expect(passes).toEqual([0, 48, 96]); // one pass over each set (the two functions: two each), 0 as they begin
    await expect(evaluateTrunk(trainer.model, data, new Subset(data, []), { knn: { size: 16 } })).rejects.toThrow('test must be a data set with at least one readable sample, got "none readable"');
    expect(await evaluateTrunk(trainer.model, data, data, { knn: { size: 16, k: 5 } })).toEqual({ knnTop1: knn, linearProbeTop1: null });
    await expect(evaluateTrunk(trainer.model, data, data, { linearProbe: { size: 16 } as never })).rejects.toThrow('options.linearProbe.size is not an option; options.linearProbe takes epochs, batchSize, lr, weightDecay, seed');
    await expect(evaluateTrunk(trainer.model, data, data, { linearProbe: { signal: AbortSignal.abort() } as never })).rejects.toThrow(
      'options.linearProbe.signal must be left out: options.knn.signal stops the passes, the kNN and the probe, got an AbortSignal');
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
    // The probe scores b and c as train's classes 1 and 2: as the same images labelled so.
    const byName = await linearProbeAccuracy(trainer.model, train, test(['b', 'c']), { size: 16, epochs: 1 });
    const asTrains = new ArrayDataset(subset, [kept.length, 16, 16, 3], { labels: Int32Array.from(kept, (i) => labels[i]), classes: ['a', 'b', 'c'] });
    expect(byName).toBe(await linearProbeAccuracy(trainer.model, train, asTrains, { size: 16, epochs: 1 }));
    // Scored by place (b, c as a, b) it would be another number.
    const byPlace = new ArrayDataset(subset, [kept.length, 16, 16, 3], { labels: Int32Array.from(kept, (i) => labels[i] - 1), classes: ['a', 'b', 'c'] });
    expect(byName).not.toBe(await linearProbeAccuracy(trainer.model, train, byPlace, { size: 16, epochs: 1 }));
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
    // Cosine similarity does not see a row's scale: rows near float32's ends (their norms under- or overflowed) rank alike.
    for (const scale of [1e-20, 1e25]) {
      const scaled = await nearestNeighbours(Tensor.from(rows.map((x) => x * scale), [n, width]), Tensor.from(queries.map((x) => x * scale), [q, width]), k);
      expect({ scale, indices: scaled.indices.data() }).toEqual({ scale, indices: indices.data() });
      (scaled.similarities.data() as Float32Array).forEach((s, i) => expect(s).toBeCloseTo((similarities.data() as Float32Array)[i], 6));
    }
    await expect(nearestNeighbours(Tensor.from(rows, [n, width]), Tensor.from(queries.subarray(0, 8), [2, 4]), 1)).rejects.toThrow(/queries must be rows of 5 features like features, got \[2, 4\]/);
    await expect(nearestNeighbours(Tensor.from(rows, [n * width]), Tensor.from(queries, [q, width]), 1)).rejects.toThrow(/features must be a 2-D float Tensor/);
    await expect(nearestNeighbours(Tensor.from(rows, [n, width]), Tensor.from(queries, [q, width]), 0)).rejects.toThrow(/k must be an integer >= 1, got 0/);
    // A disposed tensor is named as the argument it was (it said only "tensor was disposed").
    const gone = Tensor.from(queries, [q, width]);
    gone.dispose();
    await expect(nearestNeighbours(Tensor.from(rows, [n, width]), gone, 1)).rejects.toThrow(/^queries was disposed/);
    await expect(knnPredict(gone, new Int32Array(q), Tensor.from(queries, [q, width]))).rejects.toThrow(/^features was disposed/);
  });

  test('feature passes default to the side the model trained at (else 32) and a batch that suits it; a side its stem cannot take names options.size', async () => {
    const trainer = await Trainer.create(tiny.dataset(), { ...tiny.config, epochs: 1 });
    const model = trainer.model, data = tiny.dataset();
    expect(model.imageSize).toBe(16);
    const rows = async (options: Parameters<typeof datasetFeatures>[2]) => (await datasetFeatures(model, data, options)).features.data() as Float32Array;
    const [byDefault, at16, at32] = [await rows({}), await rows({ size: 16 }), await rows({ size: 32 })];
    expect(byDefault).toEqual(at16);
    expect(byDefault).not.toEqual(at32);
    expect(featureOptionsFor(model, {})).toEqual({ size: 16, batchSize: 512, layer: 'res5', signal: null });
    expect(featureOptionsFor(model, { size: 64 }).batchSize).toBe(128); // 512 images' activations of 32 px
    expect(featureOptionsFor(model, { size: 4000 }).batchSize).toBe(1);
    expect(featureOptionsFor(model, { size: 4000, batchSize: 3 }).batchSize).toBe(3);
    const fresh = await PirlModel.create({ arch: 'resnet18', stem: 'imagenet', width: 0.125 });
    expect(featureOptionsFor(fresh, {})).toMatchObject({ size: 32, batchSize: 512 }); // no training side known
    expect(featureOptionsFor(fresh, { size: 224 }).batchSize).toBe(167); // the ImageNet stem shrinks 224 px to 56
    await expect(datasetFeatures(model, data, { size: 4 })).rejects.toThrow("options.size must be at least 5 px for model.stem 'small', got 4");
    await expect(knnAccuracy(fresh, data, data, { size: 16 })).rejects.toThrow("options.size must be at least 17 px for model.stem 'imagenet', got 16");
  });

  test('embedImages: a folder, or files named one by one, embedded as pirl embed does; rows named by their files, unreadable ones left out', async () => {
    const dir = tmpDir('pirl-embed-');
    try {
      const files = await Promise.all([[40, 30], [25, 50], [64, 64]].map(async ([w, h], i) => {
        const file = path.join(dir, `${i}.png`);
        await raw(w, h).rotate(i * 90).png().toFile(file);
        return file;
      }));
      fs.writeFileSync(path.join(dir, '3.png'), 'not an image');
      const model = await PirlModel.create({ arch: 'resnet18', stem: 'small', width: 0.125 });
      model.imageSize = 16;
      const warnings: string[] = [];
      const all = await embedImages(model, dir, { onWarning: (m) => warnings.push(m) });
      expect(all.files).toEqual(files);
      expect(all.size).toBe(16);
      expect([all.labels, all.classes]).toEqual([null, null]); // a flat folder
      expect([...all.failures.keys()]).toEqual([path.join(dir, '3.png')]);
      expect(warnings).toHaveLength(1);
      // A query named alone embeds to its row of the folder's features (a batch of 1, not 3: float rounding).
      const one = await embedImages(model, [files[1]]);
      const width = model.featureDim;
      expect(one.features.shape).toEqual([1, width]);
      const row = (all.features.data() as Float32Array).slice(width, 2 * width);
      const scale = Math.max(...row.map(Math.abs));
      expect(scale).toBeGreaterThan(0.1);
      (one.features.data() as Float32Array).forEach((v, i) => expect(Math.abs(v - row[i])).toBeLessThan(1e-5 * scale));
      // The same as the folder opened at the model's side and datasetFeatures.
      const folder = await ImageFolder.fromFiles(files, { size: 16 });
      expect((await datasetFeatures(model, folder)).features.data()).toEqual(all.features.data());
      // Class subfolders: each row's label; knnPredict then names a query's class (k = 1: the image itself).
      const labelled = path.join(dir, 'labelled');
      for (const [c, i] of [['a', 0], ['b', 2]] as const) {
        fs.mkdirSync(path.join(labelled, c), { recursive: true });
        fs.copyFileSync(files[i], path.join(labelled, c, `${i}.png`));
      }
      const known = await embedImages(model, labelled);
      expect([known.labels, known.classes]).toEqual([Int32Array.from([0, 1]), ['a', 'b']]);
      // With a cache (built, then read back; closed after each pass): the same features.
      const cache = path.join(dir, 'labelled.cache');
      for (let pass = 0; pass < 2; pass++) {
        expect([...(await embedImages(model, labelled, { cache })).features.data()]).toEqual([...known.features.data()]);
      }
      await expect(embedImages(model, [files[0]], { cache })).rejects.toThrow(/^options\.cache must be left out for a list of files \(it keeps a folder's images\), got "\//);
      const queries = await embedImages(model, [files[2], files[0]]);
      expect([...(await knnPredict(known.features, known.labels!, queries.features, { k: 1 }))].map((l) => known.classes![l])).toEqual(['b', 'a']);
      // Files named one by one are not probed as a folder is: none readable is an empty result, each failure told.
      const none = await embedImages(model, [path.join(dir, '3.png')], { onWarning: () => undefined });
      expect([none.features.shape, none.files, [...none.failures.keys()]]).toEqual([[0, model.featureDim], [], [path.join(dir, '3.png')]]);
      await expect(embedImages(model, [files[0]], { layout: 'flat' })).rejects.toThrow("options.layout must be left out for a list of files (it says how a folder is read), got \"flat\"");
      await expect(ImageFolder.fromFiles([])).rejects.toThrow('files must be a non-empty array of image file paths or encoded images, got []');
      await expect(ImageFolder.fromFiles([path.join(dir, 'none.png')])).rejects.toThrow(`${path.join(dir, 'none.png')}: no such file (files[0])`);
      await expect(ImageFolder.fromFiles([dir])).rejects.toThrow('not a file (files[0]; a folder\'s images: ImageFolder.open)');
      await expect(embedImages(model, [files[0]], { size: 4 })).rejects.toThrow("options.size must be at least 5 px for model.stem 'small', got 4");
      await expect(embedImages(model, [files[0]], { sise: 16 } as never)).rejects.toThrow(/options\.sise is not an option/);
      await expect(embedImages(model, '')).rejects.toThrow(/^images must be a folder path, or a non-empty array of image file paths or encoded images, got ""$/);
      // An aborted signal refuses before any work: no cache is built.
      const unbuilt = path.join(dir, 'aborted.cache');
      await expect(embedImages(model, labelled, { cache: unbuilt, signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'ABORT_ERR' });
      expect(fs.existsSync(unbuilt)).toBe(false);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('embedImages with reuse: rows of an earlier pass kept for unchanged files, the others embedded; a pass of another model, side or layer refused', async () => {
    const dir = tmpDir('pirl-reuse-');
    try {
      for (let i = 0; i < 4; i++) await raw(20 + i, 20).png().toFile(path.join(dir, `${i}.png`));
      const model = await PirlModel.create({ arch: 'resnet18', stem: 'small', width: 0.125 });
      model.imageSize = 16;
      const first = await embedImages(model, dir);
      expect([first.reused, first.layer, first.weights, first.versions!.length]).toEqual([0, 'res5', expect.stringMatching(/^[0-9a-f]{64}$/), 4]);
      const stat = fs.statSync(path.join(dir, '1.png'));
      expect([first.dir, first.versions![1]]).toEqual([dir, { bytes: stat.size, modifiedMs: stat.mtimeMs, changedMs: stat.ctimeMs }]);
      // 1.png removed, 4.png added before 0.png in order ('00.png'), 2.png rewritten with other pixels.
      fs.rmSync(path.join(dir, '1.png'));
      await raw(30, 30).png().toFile(path.join(dir, '00.png'));
      await raw(20, 20).rotate(90).png().toFile(path.join(dir, '2.png'));
      fs.utimesSync(path.join(dir, '2.png'), new Date(), new Date(Date.now() + 5000)); // a rewrite within the same ms is another version too
      const progress: number[][] = [];
      const second = await embedImages(model, dir, { reuse: first, onProgress: (done, total) => progress.push([done, total]) });
      expect(second.files).toEqual(['0.png', '00.png', '2.png', '3.png'].map((f) => path.join(dir, f)));
      expect(second.reused).toBe(2);
      expect(progress).toEqual([[0, 2], [2, 2]]); // only 00.png and 2.png were decoded and embedded
      const width = model.featureDim;
      const rowOf = (r: typeof first, file: string) => [...(r.features.data() as Float32Array).subarray(width * r.files.indexOf(path.join(dir, file)), width * (r.files.indexOf(path.join(dir, file)) + 1))];
      expect(rowOf(second, '0.png')).toEqual(rowOf(first, '0.png'));
      expect(rowOf(second, '3.png')).toEqual(rowOf(first, '3.png'));
      // The whole is a fresh pass's, to float rounding (the new rows were embedded in a batch of 2, not 4).
      const fresh = await embedImages(model, dir);
      const a = second.features.data() as Float32Array, b = fresh.features.data() as Float32Array;
      expect(a.length).toBe(b.length);
      a.forEach((v, i) => expect(Math.abs(v - b[i])).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(b[i]))));
      expect(rowOf(second, '2.png')).not.toEqual(rowOf(first, '2.png'));
      expect(second.versions).toEqual(fresh.versions);
      // The same folder by another path (or moved) keeps its rows: they are matched by their names in it.
      const moved = `${dir}-moved`;
      fs.renameSync(dir, moved);
      try {
        const again = await embedImages(model, path.relative(process.cwd(), moved) + path.sep, { reuse: second });
        expect([again.reused, again.features.data()]).toEqual([4, second.features.data()]);
      } finally {
        fs.renameSync(moved, dir);
      }
      // An unchanged image this pass leaves out (a lower maxPixels; 00.png is 30×30) is left out, not kept from before.
      const limited = await embedImages(model, dir, { reuse: second, maxPixels: 600, onWarning: () => undefined });
      expect([limited.files, [...limited.failures.keys()], limited.reused]).toEqual([['0.png', '2.png', '3.png'].map((f) => path.join(dir, f)), [path.join(dir, '00.png')], 3]);
      // What a reuse would mix silently wrong is refused, naming what differs.
      await expect(embedImages(model, dir, { reuse: first, size: 20 })).rejects.toThrow('options.reuse.size must be 20, the side embedded at now, got 16');
      await expect(embedImages(model, dir, { reuse: first, layer: 'f' })).rejects.toThrow("options.reuse.layer must be 'f', the layer embedded now, got \"res5\"");
      const other = await PirlModel.create(model.options); // the same initial weights but one tensor's
      const [name, tensor] = [...(await other.stateDict()).entries()].find(([, t]) => t.dtype === 'float32')!;
      await other.loadStateDict(new Map([[name, Tensor.from((tensor.data() as Float32Array).map((v) => v * 2), tensor.shape)]]), { strict: false });
      other.imageSize = 16;
      await expect(embedImages(other, dir, { reuse: first })).rejects.toThrow(`options.reuse.weights must be this model's (SHA-256 ${await weightsDigest(other)})`);
      await expect(embedImages(model, [path.join(dir, '0.png')], { reuse: first })).rejects.toThrow(/^options\.reuse must be left out for a list of files/);
      await expect(embedImages(model, dir, { reuse: { ...first, files: first.files.slice(1) } })).rejects.toThrow('options.reuse.files.length must be one per row of options.reuse.features (4), got 3');
      await expect(embedImages(model, dir, { reuse: { ...first, versions: [null, null, null, { bytes: 'x' } as never] } })).rejects.toThrow('options.reuse.versions[3] must be a file version ({ bytes, modifiedMs, changedMs }) or null');
      const list = await embedImages(model, [path.join(dir, '0.png')]);
      expect(list.weights).toBeNull(); // a list's pass (a request's uploads) skips the digest
      await expect(embedImages(model, dir, { reuse: list })).rejects.toThrow("options.reuse.dir must be the folder of a folder's pass (a list's pass has none), got null");
      // With a cache, each row's version is the one its pixels were read at (the cache's check), not a later one: a file
      // rewritten while the cache is built is embedded again next time, not kept stale.
      const cache = path.join(dir, '..', `${path.basename(dir)}.cache`);
      try {
        let rewritten = false;
        const folder = await ImageFolder.open(dir, { size: 16, cache, onCacheProgress: () => {
          if (rewritten) return;
          rewritten = true;
          fs.writeFileSync(path.join(dir, '0.png'), fs.readFileSync(path.join(dir, '3.png')));
        } });
        const cached = await folderFeatures(model, folder, featureOptionsFor(model), undefined, null).finally(() => folder.close());
        expect(rewritten).toBe(true);
        const next = await embedImages(model, dir, { cache, reuse: { ...first, ...cached, dir, files: cached.indices.map((i) => folder.files[i]), size: 16, layer: 'res5', weights: first.weights } });
        expect(next.reused).toBe(3);
        const [now0, kept3] = [rowOf(next, '0.png'), rowOf(next, '3.png')]; // 0.png holds 3.png's image now
        now0.forEach((v, i) => expect(Math.abs(v - kept3[i])).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(kept3[i]))));
      } finally {
        fs.rmSync(cache, { force: true });
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("saveImageFeatures / loadImageFeatures keep a pass in pirl embed's file: loaded, it is the pass (a reuse for the next); labels checked", async () => {
    const dir = tmpDir('pirl-saved-');
    try {
      const labelled = path.join(dir, 'photos');
      for (const [c, n] of [['cat', 3], ['dog', 2]] as const) {
        fs.mkdirSync(path.join(labelled, c), { recursive: true });
        for (let i = 0; i < n; i++) await raw(20 + i, 20 + 2 * i).png().toFile(path.join(labelled, c, `${i}.png`));
      }
      const model = await PirlModel.create({ arch: 'resnet18', stem: 'small', width: 0.125 });
      model.imageSize = 16;
      const pass = await embedImages(model, labelled);
      const file = path.join(dir, 'catalogue.safetensors');
      await saveImageFeatures(file, pass);
      const loaded = await loadImageFeatures(file);
      const { features, failures, ...rest } = loaded;
      const { features: f0, failures: _, ...expected } = pass;
      expect(rest).toEqual({ ...expected, dir: path.resolve(labelled) });
      expect([...features.data()]).toEqual([...f0.data()]);
      expect(failures.size).toBe(0);
      // A nightly job: the saved pass is the next one's reuse (an image added: one embedded).
      await raw(30, 30).png().toFile(path.join(labelled, 'dog', '9.png'));
      const next = await embedImages(model, labelled, { reuse: loaded });
      expect([next.reused, next.files.length]).toEqual([5, 6]);
      // What the file holds is checked as it is read: labels of no class, of another length.
      const { tensors, metadata } = await readSafetensors(file);
      const altered = path.join(dir, 'altered.safetensors');
      for (const [labels, message] of [
        [Tensor.from(Int32Array.from([0, 0, 0, 1, 2])), `${altered}: its 'labels'[4] must be a class of the 2 in metadata "classes", got 2`],
        [Tensor.from(Int32Array.from([0, 1])), `${altered}: its 'labels' must be int32 of shape [5] (each row's class), got int32 [2]`],
      ] as const) {
        await writeSafetensors(altered, [...tensors].map(([n, t]) => [n, n === 'labels' ? labels : t] as [string, Tensor]), metadata);
        await expect(loadImageFeatures(altered)).rejects.toThrow(message);
      }
      await expect(saveImageFeatures(file, { files: 'x' } as never)).rejects.toThrow('pass must be an ImageFeatures (what embedImages gives), got an object');
      // What the reader would refuse is refused before a file is written (it wrote files that would not load).
      const refused = path.join(dir, 'refused.safetensors');
      await expect(saveImageFeatures(refused, { ...pass, files: pass.files.slice(1) })).rejects.toThrow('pass.files.length must be 5, one entry per row of pass.features, got 4');
      await expect(saveImageFeatures(refused, { ...pass, features: Tensor.zeros([5]) })).rejects.toThrow('pass.features must be a 2-D float Tensor (rows of features), got "float32 5"');
      const spoilt = Tensor.from(Float32Array.from(f0.data() as Float32Array), f0.shape);
      (spoilt.data() as Float32Array)[3 * f0.shape[1]] = NaN;
      await expect(saveImageFeatures(refused, { ...pass, features: spoilt })).rejects.toThrow(`pass.features must hold finite rows: row 3 (${pass.files[3]}) holds NaN or infinity`);
      expect(fs.existsSync(refused)).toBe(false);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('embedImages: encoded images in memory (uploads) embed as their files do; each named by its place in the list', async () => {
    const dir = tmpDir('pirl-embed-bytes-');
    try {
      const files = await Promise.all([[40, 30], [25, 50], [64, 64]].map(async ([w, h], i) => {
        const file = path.join(dir, `${i}.${i === 1 ? 'jpg' : 'png'}`);
        const image = raw(w, h).rotate(i * 90);
        await (i === 1 ? image.jpeg() : image.png()).toFile(file);
        return file;
      }));
      const model = await PirlModel.create({ arch: 'resnet18', stem: 'small', width: 0.125 });
      model.imageSize = 16;
      const fromFiles = await embedImages(model, files);
      const bytes = files.map((f) => fs.readFileSync(f));
      // A view into a larger buffer (an upload cut from a multipart body) is read where it lies.
      const body = Buffer.concat([Buffer.from('--xx\r\n'), bytes[1], Buffer.from('\r\n--xx--')]);
      const view = new Uint8Array(body.buffer, body.byteOffset + 6, bytes[1].length);
      const warnings: string[] = [];
      const codes = new Set<string>();
      const mixed = await embedImages(model, [bytes[0], view, files[2], Buffer.from('<html>gone</html>'), new Uint8Array(0)], { onWarning: (m, code) => { warnings.push(m); codes.add(code); } });
      expect([...codes]).toEqual(['PIRL_UNREADABLE_IMAGE']);
      expect(mixed.files).toEqual(['images[0]', 'images[1]', files[2]]);
      expect([...mixed.features.data()]).toEqual([...fromFiles.features.data()]);
      expect(mixed.failures).toEqual(new Map([
        ['images[3]', 'not an image: text starting "<html>gone</html>"'],
        ['images[4]', 'no bytes (an empty buffer)'],
      ]));
      expect([...mixed.failures.keys()]).toEqual(['images[3]', 'images[4]']); // in the list's order, whichever decode ended first
      expect(warnings.sort()).toEqual([...mixed.failures].map(([name, why]) => `skipping unreadable image ${name}: ${why}`).sort());
      // An upload transferred away (postMessage) before it was read is skipped, named, as an unreadable image.
      const moved = Uint8Array.from(bytes[1]);
      const embedding = embedImages(model, [bytes[0], moved], { onWarning: () => undefined });
      structuredClone(moved.buffer, { transfer: [moved.buffer] });
      const afterMove = await embedding;
      expect(afterMove.files).toEqual(['images[0]']);
      expect(afterMove.failures).toEqual(new Map([['images[1]', 'its memory was detached (transferred away) before it was read']]));
      // Bad entries are named by their place in `images`.
      await expect(embedImages(model, [files[0], 42 as never])).rejects.toThrow('images[1] must be an image file path or an encoded image (Buffer, Uint8Array), got 42');
      await expect(embedImages(model, files[0])).rejects.toThrow(`images must be a folder, or an array of image files and encoded images (one file: [file]), got "${files[0]}"`);
      await expect(embedImages(model, [bytes[0], path.join(dir, 'none.png')])).rejects.toThrow(`${path.join(dir, 'none.png')}: no such file (images[1])`);
      await expect(embedImages(model, [dir])).rejects.toThrow(`${dir}: not a file (images[0]; a folder's images: embedImages(model, folder))`);
      await expect(embedImages(model, bytes[0] as never)).rejects.toThrow(/^images must be a non-empty array of image file paths or encoded images, got /);
      await expect(ImageFolder.fromFiles([bytes[0], ''])).rejects.toThrow('files[1] must be an image file path or an encoded image (Buffer, Uint8Array), got ""');
      // Bytes sent away to a worker (detached) are named as such (V8: "Cannot perform Construct on a detached ArrayBuffer").
      const sent = Uint8Array.from(bytes[0]);
      structuredClone(sent.buffer, { transfer: [sent.buffer] });
      await expect(ImageFolder.fromFiles([bytes[0], sent])).rejects.toThrow("files[1] must be an encoded image whose bytes are still this thread's, got Uint8Array whose memory was detached (transferred away)");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a model disposed while a pass of several calls runs (embedImages, datasetFeatures, knnAccuracy) lets it end; later ones are refused', async () => {
    const dir = tmpDir('pirl-embed-swap-');
    try {
      const files = await Promise.all([0, 1, 2, 3, 4].map(async (i) => {
        const file = path.join(dir, `${i}.png`);
        await raw(30 + i, 20).png().toFile(file);
        return file;
      }));
      const make = async () => {
        const m = await PirlModel.create({ arch: 'resnet18', stem: 'small', width: 0.125 });
        m.imageSize = 16;
        return m;
      };
      const model = await make();
      const expected = await embedImages(model, files, { batchSize: 2 });
      // Disposed while the images are still being decoded, then between batches of 2.
      const pending = embedImages(model, files, { batchSize: 2 });
      const pendingFolder = embedImages(model, dir, { batchSize: 2 }); // its first await (a stat of the path) came before it took the model
      model.dispose();
      const labelled = new ArrayDataset(new Uint8Array(6 * 16 * 16 * 3).map((_, i) => (i * 7) % 251), [6, 16, 16, 3], { labels: Int32Array.from([0, 1, 0, 1, 0, 1]) });
      const other = await make();
      const width = other.featureDim;
      const knn = knnAccuracy(other, labelled, labelled, { k: 1, batchSize: 2 });
      const passes = datasetFeatures(other, labelled, { batchSize: 2 }, (done) => { if (done === 2) other.dispose(); });
      expect([...(await pending).features.data()]).toEqual([...expected.features.data()]);
      expect([...(await pendingFolder).features.data()]).toEqual([...expected.features.data()]);
      expect((await passes).features.shape).toEqual([6, width]);
      expect(await knn).toBe(1); // each sample is its own nearest neighbour
      await expect(embedImages(model, files)).rejects.toThrow(/^the model was disposed$/);
      await expect(knnAccuracy(other, labelled, labelled)).rejects.toThrow(/^the model was disposed$/);
      await expect(embedImages(null as never, files)).rejects.toThrow('model must be a PirlModel, got null');
      await expect(datasetFeatures({} as never, labelled)).rejects.toThrow('model must be a PirlModel, got an object');
      await expect(datasetFeatures(new Map() as never, labelled)).rejects.toThrow('model must be a PirlModel, got a Map');
      await expect(datasetFeatures(new Error('x') as never, labelled)).rejects.toThrow('model must be a PirlModel, got an Error');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('knnPredict: the weighted vote of the k most similar rows, as a naive vote in float64 computes it, down to a τ whose e^{s/τ} float32 cannot hold; bad labels named', async () => {
    let seed = 5;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
    const [n, m, width, k] = [30, 7, 5, 5];
    const rows = Float32Array.from({ length: n * width }, random), queries = Float32Array.from({ length: m * width }, random);
    const labels = Int32Array.from({ length: n }, (_, i) => (i * 7) % 3);
    const unit = (a: Float32Array, i: number) => {
      const v = a.slice(i * width, (i + 1) * width);
      const norm = Math.hypot(...v);
      return v.map((x) => x / norm);
    };
    // e^{s/τ} for s/τ above 88.7 is beyond float32 (τ = 0.002: any s above 0.18): the votes tied at infinity, and label 0 won.
    for (const tau of [0.1, 0.01, 0.002]) {
      const expected = Array.from({ length: m }, (_, q) => {
        const query = unit(queries, q);
        const similar = Array.from({ length: n }, (_, i) => ({ i, s: unit(rows, i).reduce((sum, x, j) => sum + x * query[j], 0) }));
        const votes = [0, 0, 0];
        for (const { i, s } of similar.sort((a, b) => b.s - a.s).slice(0, k)) votes[labels[i]] += Math.exp(s / tau);
        expect(votes.every(Number.isFinite)).toBe(true); // within float64
        return votes.indexOf(Math.max(...votes));
      });
      const predicted = await knnPredict(Tensor.from(rows, [n, width]), labels, Tensor.from(queries, [m, width]), { k, tau });
      expect({ tau, predicted: [...predicted] }).toEqual({ tau, predicted: expected });
      expect(new Set(expected).size).toBeGreaterThan(1); // the vote decides between labels
    }
    await expect(knnPredict(Tensor.from(rows, [n, width]), labels.subarray(1), Tensor.from(queries, [m, width]))).rejects.toThrow('labels must be an Int32Array of 30 labels (one per row of features), got "29 labels"');
    await expect(knnPredict(Tensor.from(rows, [n, width]), labels.map((l, i) => (i === 4 ? -1 : l)), Tensor.from(queries, [m, width]))).rejects.toThrow('labels[4] must be a label in [0, 1000000), got -1');
    await expect(knnPredict(Tensor.from(rows, [n, width]), labels.map((l, i) => (i === 2 ? 2e9 : l)), Tensor.from(queries, [m, width]))).rejects.toThrow('labels[2] must be a label in [0, 1000000), got 2000000000');
    await expect(knnPredict(Tensor.zeros([n, 0]), labels, Tensor.zeros([m, 0]))).rejects.toThrow('features must be rows of at least one feature, got [30, 0]');
    // Labels up to 999,999: the votes are taken a few queries at a time (all at once: M×10^6 doubles), the same votes.
    const many = Int32Array.from({ length: n }, (_, i) => [999_999, 12, 500_000][(i * 7) % 3]);
    const manyQueries = Float32Array.from({ length: 100 * width }, random);
    const naive = Array.from({ length: 100 }, (_, q) => {
      const query = unit(manyQueries, q);
      const similar = Array.from({ length: n }, (_, i) => ({ i, s: unit(rows, i).reduce((sum, x, j) => sum + x * query[j], 0) }));
      const votes = new Map<number, number>();
      for (const { i, s } of similar.sort((a, b) => b.s - a.s).slice(0, k)) votes.set(many[i], (votes.get(many[i]) ?? 0) + Math.exp(s / 0.1));
      return [...votes].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0][0];
    });
    expect([...(await knnPredict(Tensor.from(rows, [n, width]), many, Tensor.from(manyQueries, [100, width]), { k, tau: 0.1 }))]).toEqual(naive);
  });

  test('LinearProbe: fitted on separable features it labels held-out ones; predictions are the saved layer\'s argmax; saved and loaded alike', async () => {
    let seed = 11;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
    const [n, width, classes] = [240, 6, 3];
    // Class c's features gather around 3·e_c: linearly separable, with noise.
    const labels = Int32Array.from({ length: n }, (_, i) => i % classes);
    const rows = Float32Array.from({ length: n * width }, (_, j) => random() + (Math.floor(j / width) % classes === j % width ? 3 : 0));
    const train = Tensor.from(rows.subarray(0, 180 * width), [180, width]), test = Tensor.from(rows.subarray(180 * width), [60, width]);
    const probe = await LinearProbe.fit(train, labels.subarray(0, 180), { epochs: 20, classes: ['a', 'b', 'c'] });
    // Diverged (lr·weightDecay = 10^5: each step multiplies the weights by about −10^5), it was a probe of class 0 for every row.
    await expect(LinearProbe.fit(train, labels.subarray(0, 180), { epochs: 20, weightDecay: 1e6 })).rejects.toThrow(/^the linear probe diverged in epoch \d+ \(its weights became NaN or infinity\): lower lr \(0\.1\) or weightDecay \(1e\+06\)$/);
    await expect(LinearProbe.fit(Tensor.zeros([180, 0]), labels.subarray(0, 180))).rejects.toThrow('features must be rows of at least one feature, got [180, 0]');
    expect([probe.featureDim, probe.numClasses, probe.classes]).toEqual([width, 3, ['a', 'b', 'c']]);
    const predicted = await probe.predict(test);
    const correct = predicted.reduce((m, p, i) => m + (p === labels[180 + i] ? 1 : 0), 0);
    expect(correct).toBeGreaterThanOrEqual(57);
    // The saved layer, applied by hand: standardise, x·W + b, argmax.
    const dir = tmpDir('pirl-probe-');
    try {
      const file = path.join(dir, 'probe.safetensors');
      await probe.save(file);
      const { tensors } = await readSafetensors(file);
      const [mean, std, weight, bias] = ['mean', 'std', 'weight', 'bias'].map((k) => tensors.get(k)!.data() as Float32Array);
      const byHand = Array.from({ length: 60 }, (_, r) => {
        const logits = Array.from(bias, (b, c) => rows.subarray((180 + r) * width, (181 + r) * width).reduce((sum, x, f) => sum + ((x - mean[f]) / std[f]) * weight[f * classes + c], b));
        return logits.indexOf(Math.max(...logits));
      });
      expect([...predicted]).toEqual(byHand);
      const loaded = await LinearProbe.load(file);
      expect(loaded.classes).toEqual(['a', 'b', 'c']);
      expect(await loaded.predict(test)).toEqual(predicted);
      fs.writeFileSync(path.join(dir, 'x.safetensors'), fs.readFileSync(file).subarray(0, 8)); // cut
      await expect(LinearProbe.load(path.join(dir, 'x.safetensors'))).rejects.toThrow();
      await writeSafetensors(path.join(dir, 'other.safetensors'), [['x', Tensor.from(new Float32Array(2), [2])]]);
      await expect(LinearProbe.load(path.join(dir, 'other.safetensors'))).rejects.toThrow('not a linear probe (no "pirl-linear-probe" metadata');
      // A probe given for a model is said as one (it was taken for a torchvision trunk).
      await expect(PirlModel.load(file)).rejects.toThrow(`${file}: no pirl model options in its metadata; it is a linear probe (LinearProbe.load reads it), not a model: give the model whose features it classifies`);
      // A probe file edited to hold a NaN or a std of 0 predicted class 0 for every row: refused, naming the tensor.
      const edited = path.join(dir, 'edited.safetensors');
      const saved = await readSafetensors(file);
      for (const [name, index, value, expected] of [['std', 1, 0, 'a finite number > 0'], ['weight', 4, NaN, 'a finite number']] as const) {
        const values = Float32Array.from(saved.tensors.get(name)!.data() as Float32Array);
        values[index] = value;
        await writeSafetensors(edited, [...saved.tensors].map(([n, t]) => [n, n === name ? Tensor.from(values, t.shape) : t] as [string, Tensor]), saved.metadata);
        await expect(LinearProbe.load(edited)).rejects.toThrow(`${edited}: tensor "${name}"[${index}] must be ${expected}, got ${value}`);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    await expect(probe.predict(Tensor.from(new Float32Array(8), [2, 4]))).rejects.toThrow("features must be rows of 6 features (the probe's), got [2, 4]");
    await expect(LinearProbe.fit(train, labels.subarray(0, 180), { classes: ['a', 'b'] })).rejects.toThrow('labels[2] must be a label in [0, 2) (2 classes), got 2');
    await expect(LinearProbe.fit(train, labels.subarray(0, 10))).rejects.toThrow('labels must be an Int32Array of 180 labels (one per row of features), got "10 labels"');
    await expect(LinearProbe.fit(train, labels.subarray(0, 180), { classes: ['a', 'b', 'c'], numClasses: 7 })).rejects.toThrow("options.numClasses must be 3 (options.classes' count) or left out, got 7");
    await expect(LinearProbe.fit(train, labels.subarray(0, 180), { classes: [] })).rejects.toThrow('options.classes must be a non-empty array of class names, or null, got []');
    await expect(LinearProbe.fit(train, labels.subarray(0, 180).map((l, i) => (i === 5 ? 2e9 : l)))).rejects.toThrow('labels[5] must be a label in [0, 1000000), got 2000000000');
    expect((await LinearProbe.fit(train, labels.subarray(0, 180), { classes: null, numClasses: null, epochs: 1 })).numClasses).toBe(3);
    // NaN or infinity (1e300 is infinite in float32) would make every weight NaN: refused, naming the row.
    const broken = Float64Array.from(rows.subarray(0, 180 * width));
    broken[7 * width + 2] = 1e300;
    await expect(LinearProbe.fit(Tensor.from(broken, [180, width]), labels.subarray(0, 180))).rejects.toThrow('features must be finite: row 7 holds NaN or infinity (1 row(s) of 180)');
    await expect(probe.predict(Tensor.from(new Float32Array(width).fill(NaN), [1, width]))).rejects.toThrow('features must be finite: row 0');
  });

  test('LinearProbe: a feature constant in training is centred, not scaled: its change at test time moves no prediction', async () => {
    let seed = 3;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
    const rowsOf = (n: number, constant: number) => {
      const labels = Int32Array.from({ length: n }, (_, i) => (i % 10 < 7 ? 0 : 1));
      const rows = Float32Array.from({ length: n * 3 }, (_, j) => {
        const [i, c] = [Math.floor(j / 3), j % 3];
        return c === 0 ? (labels[i] ? 1 : -1) + 0.8 * random() : c === 1 ? random() : constant;
      });
      return { rows: Tensor.from(rows, [n, 3]), labels };
    };
    const train = rowsOf(1000, 123.456);
    const probe = await LinearProbe.fit(train.rows, train.labels, { epochs: 10 });
    const test = rowsOf(200, 123.456);
    const drifted = Float32Array.from(test.rows.data() as Float32Array, (v, j) => (j % 3 === 2 ? 123.46 : v));
    const predicted = await probe.predict(test.rows);
    expect(predicted.reduce((m, p, i) => m + (p === test.labels[i] ? 1 : 0), 0)).toBeGreaterThan(170);
    expect([...(await probe.predict(Tensor.from(drifted, [200, 3])))]).toEqual([...predicted]); // 0.004 was 4,000 deviations: every prediction one class
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

test('native work stops when its signal is aborted meanwhile: the kNN search, its vote, the probe\'s training (work of hours)', async () => {
  const rows = (n: number, d: number, seed: number) => Tensor.from(Float32Array.from({ length: n * d }, (_, i) => Math.sin(i * 12.9898 + seed) * 43758.5453 % 1), [n, d]);
  const features = rows(2000, 16, 1), queries = rows(200_000, 16, 2);
  const labels = Int32Array.from({ length: 2000 }, (_, i) => i % 3);
  const work: Array<[string, (signal: AbortSignal) => Promise<unknown>]> = [
    ['the kNN search', (signal) => nearestNeighbours(features, queries, 5, { signal })],
    ['the kNN search', (signal) => knnPredict(features, labels, queries, { k: 5, signal })],
    ["the linear probe's training", (signal) => LinearProbe.fit(features, labels, { epochs: 1_000_000, signal })],
  ];
  for (const [what, start] of work) {
    const stop = new AbortController();
    const running = start(stop.signal); // queued: the request reaches the native work at its next piece
    stop.abort('enough');
    await expect(running).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR', message: `${what} was stopped: its signal was aborted`, cause: 'enough' });
    expect(getEventListeners(stop.signal, 'abort')).toHaveLength(0);
    // Aborted before the call: refused at once.
    await expect(start(AbortSignal.abort('before'))).rejects.toMatchObject({ code: 'ABORT_ERR', cause: 'before' });
  }
  // A signal never aborted changes nothing, and is let go of.
  const signal = new AbortController().signal;
  const few = queries.rows(0, 100);
  expect(await knnPredict(features, labels, few, { k: 5, signal })).toEqual(await knnPredict(features, labels, few, { k: 5 }));
  const [a, b] = [await nearestNeighbours(features, few, 3, { signal }), await nearestNeighbours(features, few, 3)];
  expect(a.indices.data()).toEqual(b.indices.data());
  const probed = await LinearProbe.fit(features, labels, { epochs: 2, signal });
  expect(await probed.predict(few)).toEqual(await (await LinearProbe.fit(features, labels, { epochs: 2 })).predict(few));
  expect(getEventListeners(signal, 'abort')).toHaveLength(0);
  await expect(nearestNeighbours(features, few, 3, { signal: 'x' as never })).rejects.toThrow('options.signal must be an AbortSignal, got "x"');
  await expect(nearestNeighbours(features, few, 3, { stop: 1 } as never)).rejects.toThrow(/^options\.stop is not an option/);
});
