#!/usr/bin/env node
'use strict';
// `npm run bench:data`: samples/s of the whole PIRL data pipeline (both branches, Loader → batches) for
// the 'paper' and 'small' presets, for 1…N threads (each run in its own process pinned to that many
// cores), from decoded images in memory, from the decode cache and from JPEG files (generated,
// photo-like, 500×375 like ImageNet's); next to the native sampler alone (fast vs the frozen reference
// implementation, op by op) and the model step the pipeline has to feed. JSON on stdout only.
// Options: --images N (default 512), --batch N (default 32), --threads N (max, default: all cores) or
// --thread-counts 1,8,16 (those only: a many-core host in minutes); an epoch is every full batch of the images.
const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');

const { root, args, option: opt, compileTypeScript } = require('./bench-common');

const PRESET_MODEL = {
  // The model step each preset feeds: the paper's ResNet-50 at 224/64 px, the demo's ResNet-18 at 32/9 px.
  paper: ['resnet50', 'imagenet', '224', '64'],
  small: ['resnet18', 'small', '32', '9'],
};

// The side a folder's images are stored at for `preset` (what `pirl train` uses).
function folderImageSize(preset) {
  const config = require(path.join(root, 'dist', 'config'));
  return config.folderImageSize(config.PRESETS[preset]);
}

// One measurement, in its own process: the Loader's batches of `preset` from `source`.
async function child(dir, preset, source, threads, batch, batches) {
  process.env.PIRL_NUM_THREADS = String(threads);
  const sharp = require('sharp');
  sharp.concurrency(threads);
  const pirl = require(path.join(root, 'dist'));
  const size = folderImageSize(preset);
  const cache = path.join(dir, '..', `cache-${size}.bin`);
  const folder = await pirl.ImageFolder.open(dir, { size, cache: source === 'jpeg' ? undefined : cache });
  let dataset = folder;
  if (source === 'memory') {
    const { source: pixels } = await folder.batchSource(Array.from({ length: folder.length }, (_, i) => i));
    dataset = new pirl.ArrayDataset(pixels.data(), [folder.length, size, size, 3]);
  }
  // Whole epochs, timed from their start (prefetched batches would make a partial count look faster),
  // after one untimed epoch (thread pools, lookup tables, first-touch pages), for 2 s at least.
  const loader = new pirl.Loader(dataset, { batchSize: batch, epochLength: batches, config: preset, prefetch: 2 });
  for await (const _ of loader.epoch(0)); // eslint-disable-line no-unused-vars
  let samples = 0, epoch = 1;
  // The longest the JS thread was held (a server training alongside its requests waits that long).
  const delay = require('perf_hooks').monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  const start = performance.now();
  do {
    for await (const b of loader.epoch(epoch++)) {
      samples += b.indices.shape[0];
      pirl.disposeBatch(b); // as the Trainer does after its step: its memory is the next batch's
    }
  } while (performance.now() - start < 2000);
  const seconds = (performance.now() - start) / 1000;
  delay.disable();
  await folder.close();
  console.log(JSON.stringify({ samplesPerSecond: Math.round(samples / seconds), eventLoopMaxDelayMs: Math.round(delay.max / 1e6) }));
}

// Photo-like JPEGs: smooth colour fields, edges and noise, so decoding and the colour ops do real work.
async function makeImages(dir, count) {
  const sharp = require('sharp');
  fs.mkdirSync(dir, { recursive: true });
  const width = 500, height = 375;
  for (let i = 0; i < count; i++) {
    const px = Buffer.alloc(width * height * 3);
    for (let y = 0, j = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        for (let c = 0; c < 3; c++, j++) {
          const smooth = 128 + 90 * Math.sin(0.013 * (i % 5 + 1) * x + 0.021 * y + 2.1 * c + i);
          const edge = ((x * (i % 3 + 1) + y) >> 5) % 2 ? 25 : -25;
          px[j] = Math.max(0, Math.min(255, smooth + edge + ((j * 2654435761) >>> 28) - 8));
        }
      }
    }
    await sharp(px, { raw: { width, height, channels: 3 } }).jpeg({ quality: 90 }).toFile(path.join(dir, `${String(i).padStart(5, '0')}.jpg`));
  }
}

function run(command, argv, cores) {
  const pin = cores && fs.existsSync('/usr/bin/taskset') ? ['/usr/bin/taskset', ['-c', `0-${cores - 1}`, command, ...argv]] : [command, argv];
  return JSON.parse(execFileSync(pin[0], pin[1], { stdio: ['ignore', 'pipe', 'inherit'] }).toString());
}

async function main() {
  if (args[0] === '--child') return child(args[1], args[2], args[3], Number(args[4]), Number(args[5]), Number(args[6]));
  const images = opt('--images', 512), batch = opt('--batch', 32), batches = Math.floor(images / batch);
  if (batches < 8) throw new Error(`--images ${images} makes ${batches} batches of ${batch}: at least 8 are needed for a measurement`);
  const maxThreads = opt('--threads', os.availableParallelism());
  require('./build').build({ benchmarks: true });
  compileTypeScript();
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-bench-data-'));
  const dir = path.join(work, 'images');
  await makeImages(dir, images);
  const listed = opt('--thread-counts', '');
  const threadCounts = listed ? listed.split(',').map(Number) : Array.from({ length: maxThreads }, (_, i) => i + 1);
  if (!threadCounts.every((n) => Number.isInteger(n) && n >= 1 && n <= os.availableParallelism())) {
    throw new RangeError(`--thread-counts must list integers in [1, ${os.availableParallelism()}], got '${listed}'`);
  }
  const fewest = Math.min(...threadCounts), most = Math.max(...threadCounts);
  const presets = {};
  for (const preset of ['paper', 'small']) {
    const size = folderImageSize(preset);
    const pipeline = {}, eventLoop = {};
    for (const source of ['memory', 'cache', 'jpeg']) {
      pipeline[source] = {};
      eventLoop[source] = {};
      for (const threads of threadCounts) {
        const r = run(process.execPath, [__filename, '--child', dir, preset, source, threads, batch, batches], threads);
        pipeline[source][threads] = r.samplesPerSecond;
        eventLoop[source][threads] = r.eventLoopMaxDelayMs;
      }
    }
    const sampler = run(path.join(root, 'build', 'pirl_bench_sampler'), [preset, String(size), String(size), String(batch), '1', '3'], 1);
    const [arch, stem, imageSize, patchSize] = PRESET_MODEL[preset];
    const modelBatch = preset === 'paper' ? 8 : batch; // ResNet-50 at 224 px on a CPU: a small batch keeps this in minutes
    const model = run(path.join(root, 'build', 'pirl_bench_model'), [arch, stem, String(modelBatch), imageSize, patchSize, '1', String(most), '2']);
    const stepMs = Math.min(...model.msPerStep);
    presets[preset] = {
      storedImageSize: size,
      pipelineSamplesPerSecond: pipeline,
      eventLoopMaxDelayMs: eventLoop,
      perCore: Object.fromEntries(['memory', 'cache', 'jpeg'].map((s) => [s, Math.round(pipeline[s][fewest] / fewest)])),
      samplerOneThread: { pixelOps: sampler.pixelOps, samplesPerSecond: sampler.samplesPerSecond, speedupOverReference: sampler.speedup, opMicroseconds: sampler.opMicroseconds },
      modelStep: { arch, stem, imageSize: Number(imageSize), batch: modelBatch, threads: most, imagesPerSecond: Math.round((modelBatch / stepMs) * 1000) },
    };
  }
  fs.rmSync(work, { recursive: true, force: true });
  console.log(JSON.stringify({
    benchmark: 'data', images: `${images} JPEGs, 500×375`, batch, batches, cores: os.availableParallelism(), presets,
  }, null, 2));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
