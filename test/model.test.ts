import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { PirlModel, Tensor, readSafetensors, writeSafetensors } from '../lib';

const rand = (shape: number[]) => Tensor.from(new Float32Array(shape.reduce((a, b) => a * b, 1)).map(() => Math.random() - 0.5), shape);

describe('PirlModel', () => {
  let model: PirlModel;
  beforeAll(async () => {
    model = await PirlModel.create({ arch: 'resnet18', stem: 'small' });
  });

  test('forward: unit f and g for the two passes; embed: res5 or f', async () => {
    const { f, g } = await model.forward(rand([2, 3, 32, 32]), rand([2, 9, 3, 12, 12]));
    expect(f.shape).toEqual([2, 128]);
    expect(g.shape).toEqual([2, 128]);
    const norms = [f, g].flatMap((t) => [0, 1].map((b) => Math.hypot(...Array.from(t.data() as Float32Array).slice(b * 128, (b + 1) * 128))));
    expect({ norms, unit: norms.every((n) => Math.abs(n - 1) < 1e-5) }).toEqual({ norms, unit: true });
    expect(norms).toHaveLength(4);
    expect((await model.embed(rand([5, 3, 32, 32]), { batchSize: 2 })).shape).toEqual([5, 512]);
    expect((await model.embed(rand([3, 3, 32, 32]), { layer: 'f' })).shape).toEqual([3, 128]);
  });

  test('embed is batch-independent (eval mode) and leaves the training mode as it was', async () => {
    model.train();
    const images = rand([4, 3, 32, 32]);
    const all = (await model.embed(images, { batchSize: 4 })).data() as Float32Array;
    const split = (await model.embed(images, { batchSize: 1 })).data() as Float32Array;
    all.forEach((v, i) => expect(v).toBeCloseTo(split[i], 4));
    expect(model.training).toBe(true);
    expect(model.eval().training).toBe(false);
  });

  test('parameter counts: torchvision ResNet-18 trunk without fc, and the two heads', () => {
    const p = model.parameters();
    expect(p.trunk).toBe(11689512 - 513000 - 64 * 3 * 7 * 7 + 64 * 3 * 3 * 3); // the small stem's 3×3 conv1
    expect(p.fHead).toBe(512 * 128 + 128);
    expect(p.gHead).toBe(512 * 128 + 128 + 1152 * 128 + 128);
    expect(p.total).toBe(p.trunk + p.fHead + p.gHead);
    expect(model.featureDim).toBe(512);
  });

  test('save / load keeps weights, buffers and options', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-model-'));
    const file = path.join(dir, 'model.safetensors');
    await model.save(file);
    const loaded = await PirlModel.load(file);
    expect(loaded.options).toEqual(model.options);
    const images = rand([2, 3, 32, 32]);
    const a = (await model.embed(images)).data() as Float32Array;
    const b = (await loaded.embed(images)).data() as Float32Array;
    expect(Array.from(b)).toEqual(Array.from(a));
    fs.rmSync(dir, { recursive: true });
  });

  test("what the model is (featureDim, device, parameters, minInputSize) is answered during an embed, not after it (the event loop waited)", async () => {
    const small = await PirlModel.create({ width: 0.25 });
    const facts = () => [small.featureDim, small.device, small.parameters().total, small.minInputSize];
    const expected = facts();
    const started = performance.now();
    const embedding = small.embed(rand([256, 3, 64, 64]));
    await new Promise((r) => setTimeout(r, 20)); // the embed holds the model on its thread
    const asked = performance.now();
    expect(facts()).toEqual(expected);
    const answered = performance.now() - asked;
    await embedding;
    const embed = performance.now() - started;
    expect(embed).toBeGreaterThan(200); // long enough for the comparison to mean something
    expect(answered).toBeLessThan(embed / 4);
  });

  test('train() and eval() during an embed answer at once (the embed runs in eval mode of its own); the calls after them run in that mode', async () => {
    const small = await PirlModel.create({ width: 0.25 });
    let embedded = false;
    const embedding = small.embed(rand([256, 3, 64, 64])).then(() => (embedded = true));
    await new Promise((r) => setTimeout(r, 20)); // the embed holds the model on its thread
    expect(small.training).toBe(true);
    expect(small.eval().training).toBe(false);
    await new Promise(setImmediate);
    expect(embedded).toBe(false); // eval() did not wait for the embed (it took the model's mutex on the JS thread)
    // In eval mode BatchNorm uses its running statistics: a sample's f alone equals its row in a batch.
    const images = rand([2, 3, 32, 32]), patches = rand([2, 9, 3, 12, 12]);
    const batch = (await small.forward(images, patches)).f.data() as Float32Array;
    const alone = (await small.forward(Tensor.from((images.data() as Float32Array).slice(0, 3 * 32 * 32), [1, 3, 32, 32]),
      Tensor.from((patches.data() as Float32Array).slice(0, 9 * 3 * 12 * 12), [1, 9, 3, 12, 12]))).f.data() as Float32Array;
    alone.forEach((v, i) => expect(v).toBeCloseTo(batch[i], 4));
    await embedding;
    expect(small.train().training).toBe(true);
    const trained = (await small.forward(images, patches)).f.data() as Float32Array;
    expect(Math.max(...trained.slice(0, 128).map((v, i) => Math.abs(v - batch[i])))).toBeGreaterThan(1e-3); // batch statistics again
  });

  test('save() during an embed does not hold the JavaScript thread until the embed ends', async () => {
    const small = await PirlModel.create({ width: 0.25 });
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-save-')), 'model.safetensors');
    let embedded = false;
    const embedding = small.embed(rand([256, 3, 64, 64])).then(() => (embedded = true));
    await new Promise((r) => setTimeout(r, 20)); // the embed holds the model on its thread
    const saving = small.save(file);
    await new Promise(setImmediate);
    expect(embedded).toBe(false); // save() took the model's state in the JS thread: it waited for the embed
    await Promise.all([embedding, saving]);
    const loaded = await PirlModel.load(file);
    const [a, b] = [await small.stateDict(), await loaded.stateDict()];
    expect([...b.keys()]).toEqual([...a.keys()]);
    for (const [name, t] of a) expect([name, [...b.get(name)!.data()]]).toEqual([name, [...t.data()]]);
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  });

  test('stateDict() and loadStateDict() during an embed leave the JavaScript thread free, and run in the order asked', async () => {
    const small = await PirlModel.create({ width: 0.25 });
    const theirs = await (await PirlModel.create({ width: 0.25, seed: 1 })).stateDict();
    const conv1 = async (state: Promise<Map<string, Tensor>> | Map<string, Tensor>) => [...(await state).get('trunk.conv1.weight')!.data()];
    let embedded = false;
    const embedding = small.embed(rand([256, 3, 64, 64])).then(() => (embedded = true));
    await new Promise((r) => setTimeout(r, 20)); // the embed holds the model on its thread
    const [before, loading, after] = [small.stateDict(), small.loadStateDict(theirs), small.stateDict()];
    await new Promise(setImmediate);
    expect(embedded).toBe(false); // none of them waited for the embed on the JS thread
    await Promise.all([embedding, loading]);
    expect(await conv1(before)).not.toEqual(await conv1(theirs));
    expect(await conv1(after)).toEqual(await conv1(theirs));
  });

  test('stateDict is a copy: a file saved from it during training holds one moment', async () => {
    const values = await model.stateDict();
    const weight = values.get('trunk.conv1.weight')!;
    const before = Array.from(weight.data() as Float32Array);
    const copy = (await model.stateDict()).get('trunk.conv1.weight')!;
    (copy.data() as Float32Array).fill(7);
    expect(Array.from((await model.stateDict()).get('trunk.conv1.weight')!.data() as Float32Array)).toEqual(before);
  });

  test('loading refuses wrong names and shapes before copying anything', async () => {
    const other = await PirlModel.create({ arch: 'resnet18', stem: 'small' });
    const conv1 = async () => Array.from((await other.stateDict()).get('trunk.conv1.weight')!.data() as Float32Array);
    const before = await conv1();
    const values = await model.stateDict();
    values.set('trunk.bn1.weight', Tensor.zeros([3]));
    await expect(other.loadStateDict(values)).rejects.toThrow(/tensor 'trunk.bn1.weight' must have shape \[64\], got \[3\]/);
    expect(await conv1()).toEqual(before);
    const extra = new Map([['trunk.nope', Tensor.zeros([1])]]);
    await expect(other.loadStateDict(extra, { strict: false })).rejects.toThrow(/unexpected tensor 'trunk.nope'/);
    // What no model holds (a diverged run's NaN, a variance below 0) embedded NaN ever after: refused, nothing copied.
    const nan = await model.stateDict();
    nan.set('trunk.conv1.weight', Tensor.from(new Float32Array(nan.get('trunk.conv1.weight')!.data().length).fill(Number.NaN), nan.get('trunk.conv1.weight')!.shape));
    await expect(other.loadStateDict(nan)).rejects.toThrow(/^tensor 'trunk\.conv1\.weight' must be finite, got a NaN or infinite value$/);
    const negative = await model.stateDict();
    negative.set('trunk.bn1.running_var', Tensor.from(new Float32Array(negative.get('trunk.bn1.running_var')!.data().length).fill(-1), negative.get('trunk.bn1.running_var')!.shape));
    await expect(other.loadStateDict(negative)).rejects.toThrow(/^tensor 'trunk\.bn1\.running_var' must be >= 0 \(a variance\), got -1$/);
    expect(await conv1()).toEqual(before);
    await expect(other.loadStateDict(new Map())).rejects.toThrow(/^missing 1\d\d tensor\(s\): fHead\.fc\.bias, fHead\.fc\.weight, .*, … \(1\d\d more\)$/);
    await expect(other.loadStateDict(new Map([[1, Tensor.zeros([1])]]) as never)).rejects.toThrow(/^values\.keys\(\)\[0\] must be a parameter name \(a string\), got 1$/);
  });

  test("importTrunk: torchvision's files without num_batches_tracked load (as in PyTorch); the trunk's side is the model's; another arch, a whole model, are refused naming the file and why", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-import-'));
    try {
      const small = { arch: 'resnet18' as const, stem: 'small' as const, width: 0.125 };
      const source = await PirlModel.create({ ...small, seed: 3 });
      source.imageSize = 48;
      const exported = path.join(dir, 'trunk.safetensors');
      await source.exportTrunk(exported);
      const { tensors } = await readSafetensors(exported);
      const uncounted = path.join(dir, 'uncounted.safetensors'); // torchvision's older files, no metadata
      await writeSafetensors(uncounted, [...tensors].filter(([n]) => !n.endsWith('num_batches_tracked')));
      const target = await PirlModel.create({ ...small, seed: 4 });
      await target.loadStateDict(new Map([['trunk.bn1.num_batches_tracked', Tensor.from(new BigInt64Array([7n]), [])]]), { strict: false });
      expect([...(await target.stateDict('trunk')).get('bn1.num_batches_tracked')!.data()]).toEqual([7n]);
      target.imageSize = 96;
      await target.importTrunk(uncounted);
      for (const [name, t] of await target.stateDict('trunk')) {
        expect({ name, values: [...t.data()] }).toEqual({ name, values: name.endsWith('num_batches_tracked') ? [0n] : [...tensors.get(name)!.data()] });
      }
      expect(target.imageSize).toBeNull(); // the trunk's side, unknown: embedding at 96 px, its own trunk's, was wrong for it
      await target.importTrunk(exported);
      expect(target.imageSize).toBe(48);
      const wider = await PirlModel.create({ ...small, arch: 'resnet34' });
      await expect(wider.importTrunk(exported)).rejects.toThrow(`${exported} holds a trunk of resnet18 (stem small, width 0.125); this model is resnet34 (stem small, width 0.125): ` +
        'PirlModel.create({"arch":"resnet18","stem":"small","width":0.125}) makes a model it fits');
      await expect(wider.importTrunk(uncounted)).rejects.toThrow(new RegExp(`^${uncounted.replace(/[.]/g, '\\.')}: missing \\d+ tensor\\(s\\): layer1\\.2\\.bn1\\.bias, .*, … \\(\\d+ more\\) \\(this model: resnet34, stem small, width 0.125\\)$`));
      const whole = path.join(dir, 'model.safetensors');
      await source.save(whole);
      await expect(target.importTrunk(whole)).rejects.toThrow(`${whole} is a whole pirl model, not a trunk: PirlModel.load(file) reads it`);
      // Other files of pirl's are named as what they are (they were said to hold a tensor the model has no parameter for).
      const features = path.join(dir, 'features.safetensors');
      await writeSafetensors(features, [['features', Tensor.zeros([2, 64])]], { files: '["a.png","b.png"]', layer: 'res5' });
      await expect(target.importTrunk(features)).rejects.toThrow(`${features} is a features file of \`pirl embed\` (image embeddings), not a trunk: importTrunk reads what exportTrunk (pirl export) writes, or torchvision's`);
      const probe = path.join(dir, 'probe.safetensors');
      await writeSafetensors(probe, [['weight', Tensor.zeros([3, 64])]], { 'pirl-linear-probe': '{}' });
      await expect(target.importTrunk(probe)).rejects.toThrow(`${probe} is a linear probe (LinearProbe.load reads it), not a trunk`);
      const checkpoint = path.join(dir, 'checkpoint.safetensors');
      await writeSafetensors(checkpoint, [['model.trunk.conv1.weight', Tensor.zeros([8, 3, 3, 3])]], { 'pirl-checkpoint': '{}' });
      await expect(target.importTrunk(checkpoint)).rejects.toThrow(`${checkpoint} is a whole pirl model, not a trunk`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('dispose() frees the model now; a call in flight finishes, every later use is an error', async () => {
    const big = await PirlModel.create({ arch: 'resnet50', stem: 'small' });
    const images = rand([2, 3, 32, 32]);
    await big.embed(images); // its own thread started
    const threads = () => fs.readdirSync('/proc/self/task').length;
    const before = threads();
    const inFlight = big.embed(images);
    big.dispose();
    expect(big.disposed).toBe(true);
    expect((await inFlight).shape).toEqual([2, 2048]);
    // The model's state (its parameters, its thread) was destroyed with the last call: its thread is gone.
    expect(threads()).toBeLessThan(before);
    await expect(big.embed(images)).rejects.toThrow(/^the model was disposed$/);
    expect(() => big.featureDim).toThrow('the model was disposed');
    expect(() => big.eval()).toThrow('the model was disposed');
    await expect(big.save(path.join(os.tmpdir(), 'never.safetensors'))).rejects.toThrow('the model was disposed');
    expect(model.disposed).toBe(false);
  });

  test('inputs are validated in TypeScript with clear errors', async () => {
    // Files are named paths (Node's own message named "paths[0]").
    await expect(model.save(5 as never)).rejects.toThrow(/^file must be a file path, got 5$/);
    await expect(model.exportTrunk(undefined as never)).rejects.toThrow(/^file must be a file path, got undefined$/);
    await expect(model.importTrunk('')).rejects.toThrow(/^file must be a file path, got ""$/);
    await expect(PirlModel.load(null as never)).rejects.toThrow(/^file must be a file path, got null$/);
    const patches = rand([2, 9, 3, 12, 12]);
    await expect(model.forward(rand([2, 1, 32, 32]), patches)).rejects.toThrow(/images must be B×3×H×W with 3 channels, got \[2, 1, 32, 32\]/);
    await expect(model.forward(rand([2, 3, 32, 32]), rand([2, 8, 3, 12, 12]))).rejects.toThrow(/9 jigsaw patches per sample/);
    await expect(model.forward(rand([3, 3, 32, 32]), patches)).rejects.toThrow(/patches must be a batch of 3 like images/);
    await expect(model.embed(rand([2, 3, 4, 4]))).rejects.toThrow(/sides of at least 5 px for the 'small' stem, got \[2, 3, 4, 4\]/);
    // The smallest sides each stem takes: every stride-2 step still halves a map of 2 px or more.
    expect((await model.embed(rand([1, 3, 5, 5]))).shape).toEqual([1, model.featureDim]);
    const imagenet = await PirlModel.create({ arch: 'resnet18', stem: 'imagenet', width: 0.125 });
    expect(imagenet.minInputSize).toBe(17);
    expect((await imagenet.embed(rand([1, 3, 17, 17]))).shape).toEqual([1, imagenet.featureDim]);
    await expect(imagenet.embed(rand([1, 3, 16, 16]))).rejects.toThrow(/sides of at least 17 px for the 'imagenet' stem/);
    await expect(model.embed(Tensor.zeros([1, 3, 32, 32], { dtype: 'float64' }))).rejects.toThrow(/images must be a float32 Tensor/);
    await expect(model.embed(rand([1, 3, 32, 32]), { layer: 'res4' as never })).rejects.toThrow(/options.layer must be 'res5' or 'f'/);
    await expect(PirlModel.create({ arch: 'vgg' as never })).rejects.toThrow(/options.arch must be one of 'resnet18', 'resnet34', 'resnet50', got "vgg"/);
    await expect(PirlModel.create({ width: 0 })).rejects.toThrow(/options.width must be a number in \[0.015625, 4\], got 0/);
    await expect(PirlModel.create({ width: 1e-9 })).rejects.toThrow(/options.width must be a number in \[0.015625, 4\], got 1e-9/);
    await expect(PirlModel.create({ patchRunningStats: 'yes' as never })).rejects.toThrow(/options.patchRunningStats must be a boolean, got "yes"/);
  });

  test('images holding NaN or infinity are refused, naming the first such image (they gave NaN embeddings)', async () => {
    const images = rand([3, 3, 32, 32]);
    (images.data() as Float32Array)[2 * 3 * 32 * 32 + 7] = NaN;
    await expect(model.embed(images)).rejects.toThrow(/^images must be finite: image 2 holds NaN or infinity \(1 image\(s\) of 3\)$/);
    const patches = rand([3, 9, 3, 12, 12]);
    (patches.data() as Float32Array)[9 * 3 * 12 * 12 + 1] = -Infinity;
    await expect(model.forward(rand([3, 3, 32, 32]), patches)).rejects.toThrow(/^patches must be finite: sample 1 holds NaN or infinity \(1 sample\(s\) of 3\)$/);
    await expect(model.forward(images, patches)).rejects.toThrow(/^images must be finite: image 2/);
  });

  test('finite inputs that give non-finite results are refused, saying whether the inputs or the weights overflowed', async () => {
    const huge = rand([2, 3, 32, 32]);
    (huge.data() as Float32Array).fill(1e38, 3 * 32 * 32); // finite, but far past normalised images
    await expect(model.embed(huge)).rejects.toThrow(/^images gave features of NaN or infinity: their values reach 1e\+38, which overflow float32 activations; the model takes normalised images/);
    const patches = rand([2, 9, 3, 12, 12]);
    (patches.data() as Float32Array).fill(-3e38, 0, 9 * 3 * 12 * 12);
    await expect(model.forward(rand([2, 3, 32, 32]), patches)).rejects.toThrow(/^patches gave embeddings of NaN or infinity: their values reach 3e\+38/);
    // The same images through weights that overflow: said of the weights.
    const blown = await PirlModel.create(model.options);
    const weights = await blown.stateDict('all');
    const conv1 = weights.get('trunk.conv1.weight')!;
    (conv1.data() as Float32Array).fill(1e38);
    await blown.loadStateDict(weights);
    const images = rand([2, 3, 32, 32]);
    await expect(blown.embed(images)).rejects.toThrow(/^images \(values within ±0\.\d+\) gave features of NaN or infinity: the model's activations overflow float32 \(its largest weight: 1e\+38, in trunk\.conv1\.weight\); load weights from before the run diverged$/);
    blown.dispose();
    // Sound inputs and weights still embed.
    expect((await model.embed(images)).shape).toEqual([2, 512]);
  });

  test("a refused training-mode forward leaves BatchNorm's running statistics as they were", async () => {
    const m = await PirlModel.create(model.options);
    m.train();
    const stats = async () => [...(await m.stateDict('all'))].filter(([name]) => name.includes('running_') || name.includes('num_batches')).map(([, t]) => [...t.data()]);
    const before = await stats();
    const huge = rand([2, 3, 32, 32]);
    (huge.data() as Float32Array).fill(1e38, 3 * 32 * 32);
    await expect(m.forward(huge, rand([2, 9, 3, 12, 12]))).rejects.toThrow(/^images gave embeddings of NaN or infinity: their values reach 1e\+38/);
    expect(await stats()).toEqual(before);
    // 1e20: embeddings finite (BatchNorm normalises them), the running variance not (every later eval-mode result NaN).
    (huge.data() as Float32Array).fill(1e20, 3 * 32 * 32);
    await expect(m.forward(huge, rand([2, 9, 3, 12, 12]))).rejects.toThrow(/^this training-mode pass overflowed BatchNorm's running statistics \(float32\), so it was refused and they were put back: the images' and patches' values reach 1e\+20; the model takes normalised images/);
    expect(await stats()).toEqual(before);
    expect((await m.forward(rand([2, 3, 32, 32]), rand([2, 9, 3, 12, 12]))).f.shape).toEqual([2, 128]);
    m.dispose();
  });

  test('widthOf names each layer\'s width, and refuses a layer it does not have', () => {
    expect([model.widthOf('res5'), model.widthOf('f')]).toEqual([512, 128]);
    expect(() => model.widthOf('res4' as never)).toThrow('layer must be \'res5\' or \'f\', got "res4"');
  });

  test('a misspelt option is an error naming the options there are, not ignored', async () => {
    await expect(PirlModel.create({ arch: 'resnet18' }, { devise: 'cuda' } as never)).rejects.toThrow(/^placement\.devise is not an option; placement takes device \(did you mean device\?\)$/);
    await expect(PirlModel.create({ arch: 'resnet18' }, null as never)).rejects.toThrow(/placement must be an object, got null/);
    // Refused before the file is read: a missing one is not the error.
    await expect(PirlModel.load('/nonexistent/model.safetensors', { devise: 'cuda' } as never)).rejects.toThrow(/^placement\.devise is not an option; placement takes device \(did you mean device\?\)$/);
    await expect(model.embed(rand([1, 3, 32, 32]), { layr: 'f' } as never)).rejects.toThrow(/^options\.layr is not an option; options takes layer, batchSize \(did you mean layer\?\)$/);
    // embed's images are given: the feature option size does not apply to it.
    await expect(model.embed(rand([1, 3, 32, 32]), { size: 32 } as never)).rejects.toThrow(/options\.size is not an option; options takes layer, batchSize/);
    await expect(model.loadStateDict(await model.stateDict(), { scpoe: 'trunk' } as never)).rejects.toThrow(/^options\.scpoe is not an option; options takes scope, strict \(did you mean scope\?\)$/);
  });
});
