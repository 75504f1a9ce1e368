#!/usr/bin/env node
'use strict';
// `npm run bench:train`: end-to-end images/s of PIRL training steps including the data pipeline
// (native sampler from an in-memory set of 112-px images; decoding is bench:data's), at ResNet-18,
// B=32, 96-px images, 24-px patches, K=4096, 2 threads; next to the model-only step of
// bench/model_bench.cpp on the same sizes, run in the same session. JSON on stdout.
const path = require('path');
const { execFileSync } = require('child_process');

const { root, option: opt, median, compileTypeScript } = require('./bench-common');
const { TRAIN_BENCH } = require('./bench-configs');
const steps = opt('--steps', 10), threads = opt('--threads', 2);

async function main() {
  require('./build').build({ benchmarks: true });
  compileTypeScript();
  process.env.PIRL_NUM_THREADS = String(threads);
  const pirl = require(path.join(root, 'dist'));
  const n = 1024, { side } = TRAIN_BENCH;
  const pixels = new Uint8Array(n * side * side * 3);
  for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 2654435761) % 251;
  const data = new pirl.ArrayDataset(pixels, [n, side, side, 3]);
  const trainer = await pirl.Trainer.create(data, TRAIN_BENCH.config(steps));
  const times = [];
  let last = 0;
  await trainer.fit({ callbacks: { onBatchEnd: (l) => { const now = performance.now(); if (l.step > 2) times.push(now - last); last = now; } } });
  const endToEnd = (32 * 1000) / median(times);
  const model = JSON.parse(execFileSync(path.join(root, 'build', 'pirl_bench_model'),
    ['resnet18', 'imagenet', '32', '96', '24', '1', String(threads), '3']).toString());
  const modelOnly = (32 * 1000) / median(model.msPerStep);
  console.log(JSON.stringify({
    benchmark: 'train', arch: 'resnet18', batch: 32, imageSize: 96, patchSize: 24, negatives: 4096, threads, steps,
    endToEndImagesPerSecond: Math.round(endToEnd * 10) / 10,
    msPerStep: times.map((t) => Math.round(t)),
    modelOnlyImagesPerSecond: Math.round(modelOnly * 10) / 10,
    note: 'end to end = data pipeline (prefetched) + forward + PIRL loss + backward + SGD + bank update; model only = forward + backward with a trivial loss',
  }, null, 2));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
