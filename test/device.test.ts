// The device is resolved once per run and owned by the model; on a libtorch without CUDA, asking for
// one fails at creation with what to do, and a CUDA run's checkpoint continues on the CPU.
import * as path from 'path';

import { MemoryBank, PirlModel, Tensor, Trainer, buildInfo, readSafetensors, writeSafetensors } from '../lib';
import { tmpDir } from './helpers';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const tiny = require('./fixtures/tiny-run.js') as { dataset(): import('../lib').Dataset; config: import('../lib').TrainConfig };

const NO_CUDA = /is 'cuda(:\d+)?', but the libtorch pirl runs on \(.*\) has no CUDA\. .*LIBTORCH=\/path\/to\/libtorch .*pip install torch.*PIRL_FORCE_BUILD=1 node node_modules\/pirl\/scripts\/install\.js/;

/** A copy of checkpoint `file` whose metadata went through `edit`. */
async function withMetadata(file: string, to: string, edit: (meta: Record<string, unknown>) => void): Promise<string> {
  const { tensors, metadata } = await readSafetensors(file);
  const meta = JSON.parse(metadata['pirl-checkpoint']);
  edit(meta);
  await writeSafetensors(to, tensors, { ...metadata, 'pirl-checkpoint': JSON.stringify(meta) });
  return to;
}

describe('the device of a run', () => {
  test('is recorded in the checkpoint and is where the model and the bank are', async () => {
    const file = path.join(tmpDir(), 'run.ckpt');
    const trainer = await Trainer.create(tiny.dataset(), { ...tiny.config, epochs: 1, device: 'cpu' });
    await trainer.fit({ checkpoint: file });
    expect([trainer.model.device, trainer.bank.device, trainer.config.device]).toEqual(['cpu', 'cpu', 'cpu']);
    const { metadata } = await readSafetensors(file);
    expect(JSON.parse(metadata['pirl-checkpoint']).config.device).toBe('cpu');
  });

  test("a CUDA run's checkpoint continues on the CPU with { device: 'cpu' }, exactly as a CPU run would", async () => {
    const reference: number[] = [];
    await (await Trainer.create(tiny.dataset(), tiny.config)).fit({ callbacks: { onBatchEnd: (l) => void reference.push(l.loss) } });
    const dir = tmpDir();
    const file = path.join(dir, 'run.ckpt');
    const first = await Trainer.create(tiny.dataset(), tiny.config);
    await expect(first.fit({ checkpoint: file, checkpointEvery: 1, callbacks: { onBatchEnd: (l) => { if (l.step === 5) throw new Error('stop'); } } })) // before step 5's checkpoint: step 4's stands
      .rejects.toThrow('stop');
    // What a CUDA run writes: the same tensors (saved from the CPU) and config.device 'cuda'.
    const onCuda = await withMetadata(file, path.join(dir, 'cuda.ckpt'), (meta) => void ((meta.config as Record<string, unknown>).device = 'cuda'));
    const resumed = await Trainer.resume(onCuda, tiny.dataset(), { device: 'cpu' });
    expect(resumed.config.device).toBe('cpu');
    expect(resumed.progress.step).toBe(4);
    const losses: number[] = [];
    await resumed.fit({ checkpoint: onCuda, callbacks: { onBatchEnd: (l) => void losses.push(l.loss) } });
    expect(losses).toEqual(reference.slice(4));
    const { metadata } = await readSafetensors(onCuda);
    expect(JSON.parse(metadata['pirl-checkpoint']).config.device).toBe('cpu');
  });
});

(buildInfo().cuda.compiled ? describe.skip : describe)('on a libtorch without CUDA', () => {
  test("device: 'cuda' fails at creation, saying the libtorch has no CUDA and how to get one", async () => {
    await expect(PirlModel.create({}, { device: 'cuda' })).rejects.toThrow(NO_CUDA);
    await expect(Trainer.create(tiny.dataset(), { ...tiny.config, device: 'cuda' })).rejects.toThrow(NO_CUDA);
    await expect(MemoryBank.create({ size: 4, device: 'cuda:1' })).rejects.toThrow(NO_CUDA);
    expect(() => Tensor.zeros([1], { device: 'cuda' })).toThrow(NO_CUDA);
    const file = path.join(tmpDir(), 'model.safetensors');
    await (await PirlModel.create({ width: 0.125 })).save(file);
    await expect(PirlModel.load(file, { device: 'cuda' })).rejects.toThrow(NO_CUDA);
  });

  test("a CUDA run's checkpoint is refused here unless resumed with { device: 'cpu' }, naming the field", async () => {
    const dir = tmpDir();
    const trainer = await Trainer.create(tiny.dataset(), tiny.config);
    await trainer.save(path.join(dir, 'run.ckpt'));
    const onCuda = await withMetadata(path.join(dir, 'run.ckpt'), path.join(dir, 'cuda.ckpt'), (meta) => void ((meta.config as Record<string, unknown>).device = 'cuda'));
    await expect(Trainer.resume(onCuda, tiny.dataset())).rejects.toThrow(new RegExp(`${onCuda.replace(/[.]/g, '\\.')}: metadata "pirl-checkpoint".config.device ${NO_CUDA.source}`));
    await expect(Trainer.resume(onCuda, tiny.dataset(), { device: 'cuda' })).rejects.toThrow(/options.device is 'cuda', but the libtorch/);
    expect((await Trainer.resume(onCuda, tiny.dataset(), { device: 'cpu' })).config.device).toBe('cpu');
  });
});
