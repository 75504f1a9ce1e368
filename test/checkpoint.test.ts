// Checkpoint and model-file metadata are read like user input: every mutation of a field either
// resumes with exactly the value the file says, or fails with an error naming the file and the field.
import * as fs from 'fs';
import * as path from 'path';

import { ArrayDataset, ImageFolder, PirlModel, Tensor, Trainer, datasetFeatures, getNumThreads, readSafetensors, setNumThreads, writeSafetensors } from '../lib';
import * as safetensors from '../lib/safetensors';
import { raw, tmpDir } from './helpers';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const tiny = require('./fixtures/tiny-run.js') as { dataset(): import('../lib').Dataset; config: import('../lib').TrainConfig };

const maxAbsDiff = (a: unknown, b: unknown) => Array.from(a as Float32Array, (x, i) => Math.abs(x - (b as Float32Array)[i])).reduce((m, d) => Math.max(m, d), (a as Float32Array).length === (b as Float32Array).length ? 0 : Infinity);

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Every leaf of a JSON tree with its dotted path. */
function leaves(node: Json, prefix: string[] = []): string[][] {
  if (node === null || typeof node !== 'object' || Array.isArray(node)) return [prefix];
  return Object.entries(node).flatMap(([k, v]) => leaves(v, [...prefix, k]));
}

function getAt(node: Json, at: string[]): Json {
  return at.reduce<Json>((n, k) => (n as Record<string, Json>)[k], node);
}

function setAt(node: Json, at: string[], value: Json | undefined): Json {
  const copy = JSON.parse(JSON.stringify(node)) as Json;
  const parent = getAt(copy, at.slice(0, -1)) as Record<string, Json>;
  if (value === undefined) delete parent[at[at.length - 1]];
  else parent[at[at.length - 1]] = value;
  return copy;
}

// A seeded stream (mulberry32) picks among the values each leaf is tried with.
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WRONG: Array<Json | undefined> = [undefined, null, 'x', -1, 0, 0.5, 1e308, -1e-300, true, [], {}, 2 ** 53, '__proto__'];

describe('checkpoint metadata fuzz', () => {
  test('each mutated field resumes with the value the file holds, or fails naming the file and the field', async () => {
    const dir = tmpDir('pirl-fuzz-');
    const file = path.join(dir, 'run.ckpt');
    const first = await Trainer.create(tiny.dataset(), tiny.config);
    await expect(first.fit({ checkpoint: file, checkpointEvery: 1, callbacks: { onBatchEnd: (l) => { if (l.step === 4) throw new Error('stop'); } } }))
      .rejects.toThrow('stop');
    const { tensors, metadata } = await readSafetensors(file);
    const meta = JSON.parse(metadata['pirl-checkpoint']) as Json;
    const random = seeded(20261128);
    const outcomes = { resumed: 0, refused: 0 };
    const cases: Array<{ at: string[]; value: Json | undefined }> = [];
    for (const at of leaves(meta)) {
      // Every leaf with three wrong kinds of value, and once more with a random one from the list.
      for (const value of [undefined, 'x', -1, WRONG[Math.floor(random() * WRONG.length)]]) cases.push({ at, value });
    }
    for (const at of [[], ['config'], ['config', 'model'], ['config', 'loss'], ['config', 'sampler']]) cases.push({ at: [...at, 'bogus'], value: 1 });
    for (const [i, { at, value }] of cases.entries()) {
      const mutated = path.join(dir, `case-${i}.ckpt`);
      await writeSafetensors(mutated, tensors, { ...metadata, 'pirl-checkpoint': JSON.stringify(setAt(meta, at, value)) });
      const field = at.join('.');
      try {
        const trainer = await Trainer.resume(mutated, tiny.dataset());
        const held = { format: 3, config: trainer.config, position: trainer.progress, state: {} } as unknown as Json;
        // Resumed: the value the file holds was taken, never silently replaced.
        // (Not held where it can be seen: the native state, the epoch so far, the data set's digest, the threads.)
        if (!['state', 'epochSoFar', 'data', 'threads'].includes(at[0])) expect({ field, value: getAt(held, at) }).toEqual({ field, value });
        outcomes.resumed++;
      } catch (err) {
        const message = (err as Error).message;
        expect({ field, message, hasFile: message.includes(mutated) }).toMatchObject({ field, hasFile: true });
        const last = at[at.length - 1];
        // The field, or (a value that moves the run's geometry) the position it contradicts.
        expect({ field, named: message.includes(last) || message.includes('.position.') }).toEqual({ field, named: true });
        outcomes.refused++;
      }
      fs.rmSync(mutated);
    }
    expect(outcomes.resumed + outcomes.refused).toBe(cases.length);
    expect(outcomes.refused).toBeGreaterThan(cases.length / 2);
    // The counts appear in the test log for the record.
    console.log(`checkpoint metadata fuzz: ${cases.length} cases, ${outcomes.refused} refused with the field named, ${outcomes.resumed} resumed with the file's value`);
  }, 300_000);

  test("a checkpoint's copies (model, momentum, bank rows) are freed once written, and a resume's once read in", async () => {
    const file = path.join(tmpDir(), 'run.ckpt');
    const trainer = await Trainer.create(tiny.dataset(), tiny.config);
    await trainer.fit({ callbacks: { onBatchEnd: (l) => (l.step === 2 ? false : undefined) } });
    const write = jest.spyOn(safetensors, 'writeSafetensors');
    await trainer.save(file);
    const written = write.mock.calls[0][1] as Array<[string, Tensor]>;
    write.mockRestore();
    expect(written.map(([name]) => name)).toEqual(expect.arrayContaining(['bank.rows', 'bank.generator', expect.stringMatching(/^momentum\./), expect.stringMatching(/^model\./)]));
    expect(written.filter(([, t]) => !t.disposed).map(([name]) => name)).toEqual([]);
    expect(trainer.bank.rows().disposed).toBe(false); // on the CPU its rows' copy is the bank's own tensor: only the handle let go
    const read = jest.spyOn(safetensors, 'readSafetensors');
    const resumed = await Trainer.resume(file, tiny.dataset());
    const { tensors } = await read.mock.results[0].value as { tensors: Map<string, Tensor> };
    read.mockRestore();
    expect([...tensors].filter(([, t]) => !t.disposed).map(([name]) => name)).toEqual([]);
    await resumed.fit(); // trains on from its copies
    expect((await resumed.bank.get([0])).shape).toEqual([1, 16]); // tiny-run's embeddingDim
    // A resume refused (another data set) frees what it read too; a data set that is none is refused before the read.
    const refused = jest.spyOn(safetensors, 'readSafetensors');
    await expect(Trainer.resume(file, new ArrayDataset(new Uint8Array(4 * 4 * 3), [1, 4, 4, 3]))).rejects.toThrow(/the run trained on a data set of \d+ samples/);
    await expect(Trainer.resume(file, null as never)).rejects.toThrow(/^dataset must be a Dataset \(ArrayDataset, IdxDataset, ImageFolder\), got null$/);
    expect(refused.mock.calls).toHaveLength(1);
    const { tensors: unused } = await refused.mock.results[0].value as { tensors: Map<string, Tensor> };
    refused.mockRestore();
    expect([...unused].filter(([, t]) => !t.disposed).map(([name]) => name)).toEqual([]);
    // Refused once its model is built (a generator state of another size): the model is let go too.
    const { tensors: held, metadata } = await readSafetensors(file);
    const broken = path.join(tmpDir(), 'broken.ckpt');
    await writeSafetensors(broken, new Map([...held].map(([name, t]) => [name, name === 'bank.generator' ? Tensor.zeros([4], { dtype: 'uint8' }) : t])), metadata);
    const create = jest.spyOn(PirlModel, 'create');
    await expect(Trainer.resume(broken, tiny.dataset())).rejects.toThrow(/broken\.ckpt: bank\.generator must be the \d+ bytes/);
    const built = await create.mock.results[0].value as PirlModel;
    create.mockRestore();
    expect(built.disposed).toBe(true);
  });

  test('a checkpoint whose text is not JSON, of another format, or at an impossible position is refused', async () => {
    const dir = tmpDir('pirl-fuzz-');
    const file = path.join(dir, 'run.ckpt');
    await (await Trainer.create(tiny.dataset(), { ...tiny.config, epochs: 1 })).fit({ checkpoint: file });
    const { tensors, metadata } = await readSafetensors(file);
    const meta = JSON.parse(metadata['pirl-checkpoint']);
    const write = async (text: string) => {
      await writeSafetensors(file, tensors, { ...metadata, 'pirl-checkpoint': text });
      return Trainer.resume(file, tiny.dataset());
    };
    await expect(write('{"config": ')).rejects.toThrow(/run\.ckpt: metadata "pirl-checkpoint" is not JSON/);
    await expect(write(JSON.stringify({ ...meta, format: 8 }))).rejects.toThrow(/"pirl-checkpoint"\.format must be 1 to 7 .*got 8/);
    // Format 6 came before config.lrUpdate: it resumes with 'step', the lr it trained with; format 7 must hold it.
    const { lrUpdate: _update, ...config6 } = meta.config;
    expect((await write(JSON.stringify({ ...meta, format: 6, config: config6 }))).config.lrUpdate).toBe('step');
    await expect(write(JSON.stringify({ ...meta, config: config6 }))).rejects.toThrow(/config\.lrUpdate must be 'step' or 'epoch', got undefined/);
    // Format 5 came before sampler.photometricOps: it resumes with 'one', what it trained with; format 6 must hold it.
    const { photometricOps: _ops, ...sampler5 } = meta.config.sampler;
    expect((await write(JSON.stringify({ ...meta, format: 5, config: { ...config6, sampler: sampler5 } }))).config.sampler.photometricOps).toBe('one');
    await expect(write(JSON.stringify({ ...meta, config: { ...meta.config, sampler: sampler5 } }))).rejects.toThrow(/config\.sampler\.photometricOps must be 'one' or 'all', got undefined/);
    // Format 4 recorded neither the stored images nor the threads: it resumes with neither checked.
    const { threads: _t, ...format4 } = meta as Record<string, Json>;
    const { images: _i, ...data4 } = meta.data;
    expect((await write(JSON.stringify({ ...format4, format: 4, data: data4 }))).progress.step).toBe(meta.position.step);
    await expect(write(JSON.stringify({ ...format4, format: 5 }))).rejects.toThrow(/"pirl-checkpoint"\.threads must be an integer >= 1, got undefined/);
    // Format 3 had no digest of the data: it resumes unchecked.
    const { data: _d, ...unchecked } = meta as Record<string, Json>;
    expect((await write(JSON.stringify({ ...unchecked, format: 3 }))).progress.step).toBe((meta as { position: { step: number } }).position.step);
    // Format 2 had no epochSoFar: it resumes without it; one that carries it (written before the format said so) keeps it.
    const { epochSoFar: _e, ...former } = meta as Record<string, Json>;
    expect((await write(JSON.stringify({ ...former, format: 2 }))).progress.step).toBe((meta as { position: { step: number } }).position.step);
    await expect(write(JSON.stringify({ ...meta, format: 2, epochSoFar: { lossSum: 'x', images: 1 } }))).rejects.toThrow(/epochSoFar\.lossSum must be a finite number, got "x"/);
    await expect(write(JSON.stringify([meta]))).rejects.toThrow(/"pirl-checkpoint" must be an object/);
    // Format 1 came before config.syncBatchNorm: it resumes without it; format 2 must hold it.
    const { syncBatchNorm: _sync, ...formerConfig } = meta.config;
    expect((await write(JSON.stringify({ ...meta, format: 1, config: formerConfig }))).config.syncBatchNorm).toBe(false);
    await expect(write(JSON.stringify({ ...meta, config: formerConfig }))).rejects.toThrow(/config\.syncBatchNorm must be a boolean, got undefined/);
    await expect(write(JSON.stringify({ ...meta, position: { epoch: 0, stepInEpoch: 1, step: 2 } }))).rejects.toThrow(/position\.step must be epoch·3 \+ stepInEpoch = 1, got 2/);
    await expect(write(JSON.stringify({ ...meta, position: { epoch: 0, stepInEpoch: 4, step: 4 } }))).rejects.toThrow(/position\.stepInEpoch must be at most the 3 steps/);
    await expect(write(JSON.stringify({ ...meta, position: { epoch: 1, stepInEpoch: 1, step: 4 } }))).rejects.toThrow(/position\.stepInEpoch must be 0 once the run's 1 epochs are done/);
    await expect(write(JSON.stringify({ ...meta, position: { epoch: 9, stepInEpoch: 0, step: 27 } }))).rejects.toThrow(/position\.epoch must be at most the run's 1 epochs/);
    // Steps were taken, so the optimizer's momentum must be there, every tensor of it.
    const names = [...tensors.keys()];
    const withoutMomentum = new Map(names.filter((n) => !n.startsWith('momentum.')).map((n) => [n, tensors.get(n)!]));
    await writeSafetensors(file, withoutMomentum, metadata);
    await expect(Trainer.resume(file, tiny.dataset())).rejects.toThrow(/3 steps taken but no optimizer momentum tensors/);
    const oneLess = new Map(names.filter((n) => n !== 'momentum.fHead.fc.bias').map((n) => [n, tensors.get(n)!]));
    await writeSafetensors(file, oneLess, metadata);
    await expect(Trainer.resume(file, tiny.dataset())).rejects.toThrow(/momentum buffers must cover every parameter: 'fHead.fc.bias' is missing/);
    // A NaN in the momentum is refused as one in the weights is (taken, it made the weights NaN at the first step).
    const spoilt = new Map(tensors);
    spoilt.set('momentum.fHead.fc.bias', Tensor.from(new Float32Array(tensors.get('momentum.fHead.fc.bias')!.numel).fill(NaN), tensors.get('momentum.fHead.fc.bias')!.shape));
    await writeSafetensors(file, spoilt, metadata);
    await expect(Trainer.resume(file, tiny.dataset())).rejects.toThrow(/momentum buffer 'fHead.fc.bias' must be finite, got a NaN or infinite value/);
  });

  test('a resume with another thread count is warned of: it continues, but not bit for bit', async () => {
    const file = path.join(tmpDir('pirl-ckpt-'), 'run.ckpt');
    const threads = getNumThreads(), other = threads === 1 ? 2 : threads - 1;
    await (await Trainer.create(tiny.dataset(), { ...tiny.config, epochs: 1 })).fit({ checkpoint: file });
    expect(JSON.parse((await readSafetensors(file)).metadata['pirl-checkpoint']).threads).toBe(threads);
    const emit = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    let warned: string[];
    try {
      await Trainer.resume(file, tiny.dataset());
      setNumThreads(other);
      await Trainer.resume(file, tiny.dataset());
      warned = emit.mock.calls.map(([message, options]) => `${(options as { code: string }).code}: ${message}`);
    } finally {
      setNumThreads(threads);
      emit.mockRestore();
    }
    expect(warned).toEqual([`PIRL_THREADS_CHANGED: the run stepped with ${threads} intra-op thread(s); this process has ${other}: it continues, ` +
      `but its numbers part from the uninterrupted run's in the last bits (setNumThreads(${threads}), pirl train --threads ${threads}: as it was)`]);
  });

  test("a folder changed since (one image out, another in: as many samples) is refused, not paired row by row with other images", async () => {
    const dir = tmpDir('pirl-ckpt-');
    try {
      const images = path.join(dir, 'images');
      fs.mkdirSync(images);
      for (let i = 0; i < 16; i++) await raw(32, 32).png().toFile(path.join(images, `img${String(i).padStart(2, '0')}.png`));
      const file = path.join(dir, 'run.ckpt');
      const config = { ...tiny.config, batchSize: 4, epochs: 1, epochLength: 2 };
      await (await Trainer.create(await ImageFolder.open(images, { size: 24 }), config)).fit({ checkpoint: file });
      const newRun = `or start a new run from its weights (options.init: PirlModel.load(${file}); pirl train --init ${file}, in another --out)`;
      // The same folder by another path (another mount point, a relative spelling) is the same data.
      const relative = path.relative(process.cwd(), images);
      expect((await Trainer.resume(file, await ImageFolder.open(relative, { size: 24 }))).progress.step).toBe(2);
      // The same folder opened at another side: each view would be cut from other pixels.
      await expect(Trainer.resume(file, await ImageFolder.open(images, { size: 32 }))).rejects.toThrow(
        `${file}: the run trained on its images stored at 24×24×3; the data set given holds them at 32×32×3: open it as the run did`);
      // Read recursive, a folder without subfolders is the same data; one with a subfolder of images is not, said as the option.
      expect((await Trainer.resume(file, await ImageFolder.open(images, { size: 24, recursive: true }))).progress.step).toBe(2);
      fs.mkdirSync(path.join(images, 'older'));
      await raw(32, 32).png().toFile(path.join(images, 'older', 'img00.png'));
      await expect(Trainer.resume(file, await ImageFolder.open(images, { size: 24, layout: 'flat', recursive: true }))).rejects.toThrow(
        `${file}: the run trained on a data set of 16 samples (its memory bank's rows); the one given has 17: resume over the run's data (the folder it trained on, as it was), ` +
        `${newRun}. The run read its folder with recursive false (the data set given: true): open it as the run did (ImageFolder.open's options.layout and options.recursive; pirl train --layout, --recursive)`);
      fs.rmSync(path.join(images, 'older'), { recursive: true });
      fs.rmSync(path.join(images, 'img00.png'));
      await raw(32, 32).png().toFile(path.join(images, 'img99.png'));
      await expect(Trainer.resume(file, await ImageFolder.open(images, { size: 24 }))).rejects.toThrow(
        `${file}: the data set given is not the one the run trained on: its files (names, in the folder) differ, though it has as many samples`);
      // As many samples not from a folder: said as such (they have no names to differ).
      const arrays = new ArrayDataset(new Uint8Array(16 * 24 * 24 * 3), [16, 24, 24, 3]);
      await expect(Trainer.resume(file, arrays)).rejects.toThrow(
        `${file}: the data set given is not the one the run trained on: the run's was a folder of images, the one given is not a folder (its samples have no file names)`);
      await raw(32, 32).png().toFile(path.join(images, 'img98.png')); // one more: the bank says what the run had
      const grown = await ImageFolder.open(images, { size: 24 });
      await expect(Trainer.resume(file, grown)).rejects.toThrow(
        `${file}: the run trained on a data set of 16 samples (its memory bank's rows); the one given has 17: resume over the run's data (the folder it trained on, as it was), ${newRun}`);
      // That new run: its model starts as the run's (weights and BatchNorm statistics), its options taken from it, the bank
      // its features (bankInit 'features'); the model given is left as it was.
      const init = await PirlModel.load(file);
      const before = await init.stateDict();
      const { model: _, ...rest } = config;
      const again = await Trainer.create(grown, { ...rest, bankInit: 'features' }, { init });
      const started = await again.model.stateDict();
      expect([again.config.model, [...started.keys()]]).toEqual([{ ...init.options, seed: config.seed }, [...before.keys()]]);
      for (const [name, t] of before) expect([name, started.get(name)!.data()]).toEqual([name, t.data()]);
      const features = await datasetFeatures(init, grown, { size: 16, layer: 'f' });
      expect(maxAbsDiff(again.bank.rows().data(), features.features.data())).toBeLessThan(1e-5);
      await again.fit();
      for (const [name, t] of await init.stateDict()) expect([name, t.data()]).toEqual([name, before.get(name)!.data()]);
      expect(maxAbsDiff((await again.model.stateDict('trunk')).get('conv1.weight')!.data(), before.get('trunk.conv1.weight')!.data())).toBeGreaterThan(0); // it trained
      // Another shape than its weights' is refused, naming the option; so is what is no model, or one disposed.
      await expect(Trainer.create(grown, { ...config, model: { ...config.model, width: 0.25 } }, { init })).rejects.toThrow(
        'config.model.width must be 0.125, the width of options.init (the run starts from its weights), got 0.25');
      await expect(Trainer.create(grown, config, { init: file as never })).rejects.toThrow(`options.init must be a PirlModel, got "${file}"`);
      init.dispose();
      await expect(Trainer.create(grown, config, { init })).rejects.toThrow('options.init must be a PirlModel not disposed');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('model file metadata', () => {
  test('options that disagree with the tensors are refused before the model is built', async () => {
    const dir = tmpDir('pirl-fuzz-');
    const file = path.join(dir, 'model.safetensors');
    const model = await PirlModel.create({ width: 0.125, embeddingDim: 16 });
    await model.save(file);
    const { tensors, metadata } = await readSafetensors(file);
    const rewrite = async (pirl: unknown) => {
      await writeSafetensors(file, tensors, { ...metadata, pirl: JSON.stringify(pirl) });
      return PirlModel.load(file);
    };
    const saved = JSON.parse(metadata.pirl);
    await expect(rewrite({ ...saved, model: { ...saved.model, width: 200 } })).rejects.toThrow(/model\.safetensors: metadata "pirl"\.model\.width must be a number in \[0.015625, 4\], got 200/);
    // A width within range but not the file's: caught against the file's own tensors, before building.
    const create = jest.spyOn(PirlModel, 'create');
    await expect(rewrite({ ...saved, model: { ...saved.model, width: 4, arch: 'resnet50' } })).rejects.toThrow(/need tensor 'trunk\.conv1\.weight' of shape \[256, 3, 3, 3\], the file has \[8, 3, 3, 3\]/);
    expect(create).not.toHaveBeenCalled();
    create.mockRestore();
    await expect(rewrite({ ...saved, model: { ...saved.model, embeddingDim: 32 } })).rejects.toThrow(/need tensor 'fHead\.fc\.weight' of shape \[32, 64\], the file has \[16, 64\]/);
    await expect(rewrite({ format: 1, model: { ...saved.model, seed: undefined } })).rejects.toThrow(/"pirl"\.model\.seed must be an integer .*got undefined/);
    await expect(rewrite({ format: 7, model: saved.model })).rejects.toThrow(/"pirl"\.format must be 1/);
    // The first layout (bare options, no format) still loads.
    const legacy = await rewrite(saved.model);
    expect(legacy.options).toEqual(model.options);
    // A file that describes no model is refused from its header, before its tensors are read (a header listing
    // millions of them took seconds and gigabytes first).
    const notAModel = path.join(dir, 'tensors.safetensors');
    await writeSafetensors(notAModel, [['x', Tensor.zeros([4])]]);
    const read = jest.spyOn(safetensors, 'readSafetensors');
    await expect(PirlModel.load(notAModel)).rejects.toThrow(`${notAModel}: no pirl model options in its metadata`);
    expect(read).not.toHaveBeenCalled();
    read.mockRestore();
    // What the native load refuses is said with the file (pirl search reads two).
    const conv = tensors.get('trunk.conv1.weight')!;
    await writeSafetensors(file, [...tensors].map(([n, t]) => [n, n === 'trunk.conv1.weight' ? Tensor.from(new Int32Array(conv.numel), conv.shape) : t] as [string, Tensor]), metadata);
    await expect(PirlModel.load(file)).rejects.toThrow(new RegExp(`^${file.replace(/[.]/g, '\\.')}: .*conv1\\.weight`));
  });
});

describe("a checkpoint's model", () => {
  test('PirlModel.load reads it (a run killed before its model file), on the device asked, wherever the run trained', async () => {
    const dir = tmpDir('pirl-ckpt-');
    const file = path.join(dir, 'run.ckpt');
    const trainer = await Trainer.create(tiny.dataset(), { ...tiny.config, epochs: 1 });
    await trainer.fit({ checkpoint: file });
    const { tensors, metadata } = await readSafetensors(file);
    const meta = JSON.parse(metadata['pirl-checkpoint']);
    // As if trained on a GPU: this machine (without one) still reads its model.
    await writeSafetensors(file, tensors, { ...metadata, 'pirl-checkpoint': JSON.stringify({ ...meta, config: { ...meta.config, device: 'cuda' } }) });
    const model = await PirlModel.load(file);
    expect([model.device, model.options, model.imageSize]).toEqual(['cpu', trainer.model.options, trainer.config.sampler.imageSize]);
    const [a, b] = [await trainer.model.stateDict(), await model.stateDict()];
    expect([...b.keys()]).toEqual([...a.keys()]);
    for (const [name, t] of a) expect([name, [...b.get(name)!.data()]]).toEqual([name, [...t.data()]]);
  });
});

describe('where a checkpoint goes', () => {
  test('fit makes its folder; one that cannot be made fails before the first step, naming the checkpoint', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'new', 'deeper', 'run.ckpt');
    await (await Trainer.create(tiny.dataset(), { ...tiny.config, epochs: 1 })).fit({ checkpoint: file });
    expect(fs.existsSync(file)).toBe(true);
    let steps = 0;
    const trainer = await Trainer.create(tiny.dataset(), tiny.config);
    await expect(trainer.fit({ checkpoint: '/proc/pirl-nowhere/run.ckpt', callbacks: { onBatchEnd: () => void steps++ } }))
      .rejects.toThrow(/cannot write \/proc\/pirl-nowhere\/run\.ckpt: cannot create \/proc\/pirl-nowhere: ENOENT/);
    // A folder that exists but takes no file (/proc standing for a read-only mount): before the first step too.
    await expect(trainer.fit({ checkpoint: '/proc/run.ckpt', callbacks: { onBatchEnd: () => void steps++ } }))
      .rejects.toThrow(/^cannot write \/proc\/run\.ckpt: ENOENT/);
    expect(steps).toBe(0);
    expect(fs.readdirSync(path.dirname(file))).toEqual(['run.ckpt']); // the write probe left nothing behind
  });
});
