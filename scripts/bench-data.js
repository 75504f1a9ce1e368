#!/usr/bin/env node
'use strict';
// `npm run bench:data`: samples/s of the full PIRL data pipeline (both branches, 'small' preset) from
// a folder of JPEGs it generates, with and without the decode-once cache, for 1 and 2 threads, each
// in its own process; next to the model step's consumption (bench model binary, same sizes).
// JSON on stdout. Options: --images N (default 1024), --batch N (default 128), --batches N (default 8).
const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');

const { root, args, option: opt, compileTypeScript } = require('./bench-common');

async function child(dir, threads, cache, batch, batches) {
  process.env.PIRL_NUM_THREADS = String(threads);
  const sharp = require('sharp');
  sharp.concurrency(threads);
  const pirl = require(path.join(root, 'dist'));
  const folder = await pirl.ImageFolder.open(dir, { size: 64, cache: cache ? path.join(dir, '..', 'bench.cache') : undefined });
  const loader = new pirl.Loader(folder, { batchSize: batch, epochLength: batches + 1, config: 'small', prefetch: 2 });
  let samples = 0, start = 0, n = 0;
  for await (const b of loader.epoch(1)) {
    if (n++ === 0) { start = performance.now(); continue; } // the first batch warms up
    samples += b.indices.shape[0];
  }
  const seconds = (performance.now() - start) / 1000;
  await folder.close();
  console.log(JSON.stringify({ samplesPerSecond: Math.round(samples / seconds) }));
}

async function makeImages(dir, count) {
  const sharp = require('sharp');
  fs.mkdirSync(dir, { recursive: true });
  for (let i = 0; i < count; i++) {
    const px = Buffer.alloc(96 * 96 * 3);
    for (let j = 0; j < px.length; j++) px[j] = (j * (i % 7 + 1) + i * 13) % 256;
    await sharp(px, { raw: { width: 96, height: 96, channels: 3 } }).jpeg({ quality: 90 }).toFile(path.join(dir, `${i}.jpg`));
  }
}

async function main() {
  if (args[0] === '--child') return child(args[1], Number(args[2]), args[3] === '1', Number(args[4]), Number(args[5]));
  const images = opt('--images', 1024), batch = opt('--batch', 128), batches = opt('--batches', 8);
  require('./build').build({ benchmarks: true });
  compileTypeScript();
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-bench-data-'));
  const dir = path.join(work, 'images');
  await makeImages(dir, images);
  const pipeline = {};
  for (const cache of [false, true]) {
    for (const threads of [1, 2]) {
      const out = execFileSync(process.execPath, [__filename, '--child', dir, threads, cache ? 1 : 0, batch, batches]);
      pipeline[`${cache ? 'cache' : 'decode'}-${threads}thread${threads > 1 ? 's' : ''}`] = JSON.parse(out.toString()).samplesPerSecond;
    }
  }
  // The model step on the same sizes: ResNet-18, small stem, 32 px images, 9 px patches, 2 threads.
  const model = JSON.parse(execFileSync(path.join(root, 'build', 'pirl_bench_model'),
    ['resnet18', 'small', String(batch), '32', '9', '1', '2', '2']).toString());
  const stepMs = model.msPerStep.sort((a, b) => a - b)[0];
  const modelImagesPerSecond = Math.round((batch / stepMs) * 1000);
  fs.rmSync(work, { recursive: true, force: true });
  console.log(JSON.stringify({
    benchmark: 'data', preset: 'small', images, batch, batches, imageFolderSize: 64,
    pipelineSamplesPerSecond: pipeline,
    modelStep: { arch: 'resnet18', stem: 'small', threads: 2, imagesPerSecond: modelImagesPerSecond },
    pipelineOutrunsModel: Math.min(pipeline['cache-2threads'], pipeline['decode-2threads']) > modelImagesPerSecond,
  }, null, 2));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
