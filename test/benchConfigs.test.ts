import { ArrayDataset, Trainer } from '../lib';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { GPU_CASES, gpuTrainConfig, TRAIN_BENCH } = require('../scripts/bench-configs.js') as {
  GPU_CASES: Array<{ name: string; side: number; batches: number[]; negatives: number }>;
  gpuTrainConfig(c: unknown, o: { batchSize: number; precision: string; device: string; channelsLast: boolean; negatives: number; steps: number }): object;
  TRAIN_BENCH: { side: number; config(steps: number): { batchSize: number } };
};

const data = (n: number, side: number) => new ArrayDataset(new Uint8Array(n * side * side * 3).map((_, i) => i % 251), [n, side, side, 3]);

// A benchmark refused at Trainer.create is found here, not in a GPU session (bench:gpu's ResNet-18 case was, a day).
describe('the benchmarks\' training runs are accepted', () => {
  test.each(GPU_CASES.map((c) => [c.name, c] as const))('bench:gpu %s', async (_, c) => {
    const batchSize = Math.max(...c.batches);
    const trainer = await Trainer.create(data(batchSize, c.side), gpuTrainConfig(c, { batchSize, precision: 'fp32', device: 'cpu', channelsLast: true, negatives: 16, steps: 1 }));
    expect(trainer.config.batchSize).toBe(batchSize);
  });

  test('bench:train', async () => {
    const config = TRAIN_BENCH.config(1);
    const trainer = await Trainer.create(data(config.batchSize, TRAIN_BENCH.side), config);
    expect(trainer.config.sampler.patchSize).toBe(24);
  });
});
