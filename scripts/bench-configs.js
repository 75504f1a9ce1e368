'use strict';
// The training runs the benchmarks measure, in one place: bench:gpu's cases and bench:train's run.
// test/benchConfigs.test.ts creates a Trainer of each: a stricter check once refused bench:gpu's ResNet-18
// case, unnoticed until a GPU session would have failed on it.

/** bench:gpu: the paper's ResNet-50 at 224/64 px, and ResNet-18 on the paper's sampler scaled to 96-px views. */
const GPU_CASES = [
  { name: 'resnet50-paper', arch: 'resnet50', stem: 'imagenet', sampler: 'paper', imageSize: 224, patchSize: 64, side: 292, batches: [64, 128], negatives: 32000 },
  { name: 'resnet18-96px', arch: 'resnet18', stem: 'imagenet', sampler: { preset: 'paper', imageSize: 96, jigsawSize: 108, patchSize: 24 }, imageSize: 96, patchSize: 24, side: 112, batches: [32], negatives: 4096 },
];

/** bench:gpu's run of case `c`. */
function gpuTrainConfig(c, { batchSize, precision, device, channelsLast, negatives, steps }) {
  return {
    recipe: 'paper', model: { arch: c.arch, stem: c.stem, channelsLast }, sampler: c.sampler,
    // The model-step loop's 3 + steps steps fill epoch 0 (trainer.step counts in progress); fit times epoch 1.
    loss: { negatives }, batchSize, precision, device, epochs: 2, epochLength: steps + 3, bankInit: 'random',
  };
}

/** bench:train: ResNet-18, B=32, 96-px views and 24-px patches from 112-px images, K=4096 (bench:gpu's second case on the CPU). */
const TRAIN_BENCH = {
  side: 112,
  config: (steps) => ({
    model: { arch: 'resnet18', stem: 'imagenet' },
    loss: { negatives: 4096, mode: 'nce', z: 'frozen' },
    sampler: { preset: 'paper', imageSize: 96, jigsawSize: 108, patchSize: 24 },
    batchSize: 32, epochs: 1, epochLength: steps + 2, baseLr: 0.03, bankInit: 'random',
  }),
};

module.exports = { GPU_CASES, gpuTrainConfig, TRAIN_BENCH };
