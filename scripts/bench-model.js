#!/usr/bin/env node
'use strict';
// `npm run bench:model`: forward+backward images/s of the PIRL network (both passes) at ResNet-18,
// B=32, 96×96 images + 9×24×24 patches, with and without channels_last, each in its own process.
// Options: --threads N (default 2), --reps N (default 3), --arch, --stem. JSON on stdout.
const path = require('path');
const { execFileSync } = require('child_process');
const { build } = require('./build');

const { option: opt, median } = require('./bench-common');
const config = {
  arch: opt('--arch', 'resnet18'),
  stem: opt('--stem', 'imagenet'),
  batch: Number(opt('--batch', 32)),
  imageSize: 96,
  patchSize: 24,
  threads: Number(opt('--threads', 2)),
  reps: Number(opt('--reps', 3)),
};

build({ benchmarks: true });
const exe = path.join(__dirname, '..', 'build', 'pirl_bench_model');

const results = {};
for (const channelsLast of [false, true]) {
  const out = execFileSync(exe, [config.arch, config.stem, config.batch, config.imageSize, config.patchSize,
    channelsLast ? 1 : 0, config.threads, config.reps].map(String));
  const { msPerStep } = JSON.parse(out.toString());
  const ms = median(msPerStep);
  results[channelsLast ? 'channelsLast' : 'contiguous'] = {
    msPerStep, medianMs: ms, imagesPerSecond: Math.round((config.batch / ms) * 1000 * 10) / 10,
  };
  process.stderr.write(`channelsLast=${channelsLast}: ${ms} ms/step, ${results[channelsLast ? 'channelsLast' : 'contiguous'].imagesPerSecond} img/s\n`);
}
console.log(JSON.stringify({
  benchmark: 'model', ...config,
  note: 'one step = forward of B images and 9·B patches through the trunk (two passes), f and g heads, backward',
  results,
  channelsLastSpeedup: Math.round((results.contiguous.medianMs / results.channelsLast.medianMs) * 100) / 100,
}, null, 2));
