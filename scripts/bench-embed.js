#!/usr/bin/env node
'use strict';
// `npm run bench:embed`: what incremental embedding saves a growing catalogue. A folder of generated photo-like JPEGs
// is embedded whole (embedImages, then saveImageFeatures: pirl embed's work), then updated from that file
// (loadImageFeatures, embedImages with reuse, saveImageFeatures: pirl embed --update's) with a share of its images
// changed, and with none changed; each the median of --reps runs. The kept rows are checked bit for bit.
// JSON on stdout only. Options: --images N (1000), --changed F (0.01, the share rewritten), --side N (64, as stored),
// --arch resnet18|resnet50 (resnet18), --width W (1), --reps N (3).
const fs = require('fs');
const os = require('os');
const path = require('path');

const { root, option, median, compileTypeScript } = require('./bench-common');

async function main() {
  const images = option('--images', 1000), share = option('--changed', 0.01), side = option('--side', 64), reps = option('--reps', 3);
  const arch = option('--arch', 'resnet18'), width = option('--width', 1);
  compileTypeScript();
  const sharp = require('sharp');
  const pirl = require(path.join(root, 'dist'));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-bench-embed-'));
  const folder = path.join(dir, 'catalogue');
  fs.mkdirSync(folder);
  // Smooth gradients with noise (a JPEG of noise alone is mostly entropy, unlike a photo), each its own.
  const photo = (seed) => {
    const px = Buffer.alloc(side * side * 3);
    for (let i = 0; i < px.length; i++) px[i] = (((i / 3) % side) * 3 + seed * 37 + ((i * 2654435761 + seed) >>> 24)) & 255;
    return sharp(px, { raw: { width: side, height: side, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
  };
  const name = (i) => path.join(folder, `${String(i).padStart(7, '0')}.jpg`);
  for (let i = 0; i < images; i++) fs.writeFileSync(name(i), await photo(i));
  try {
    const model = await pirl.PirlModel.create({ arch, stem: 'small', width });
    model.imageSize = side;
    const file = path.join(dir, 'catalogue.safetensors');
    const timed = async (work) => {
      const start = performance.now();
      const result = await work();
      return { seconds: (performance.now() - start) / 1000, result };
    };
    const full = [];
    for (let r = 0; r < reps; r++) full.push((await timed(async () => pirl.saveImageFeatures(file, await pirl.embedImages(model, folder)))).seconds);
    const update = async () => {
      const earlier = await pirl.loadImageFeatures(file);
      const now = await pirl.embedImages(model, folder, { reuse: earlier });
      await pirl.saveImageFeatures(file, now);
      return { earlier, now };
    };
    const changed = Math.max(1, Math.round(images * share));
    const updates = [], unchanged = [];
    let keptExactly = true;
    for (let r = 0; r < reps; r++) {
      for (let k = 0; k < changed; k++) {
        const i = (r * changed + k) % images;
        fs.writeFileSync(name(i), await photo(images + r * changed + k));
      }
      const { seconds, result } = await timed(update);
      if (result.now.reused !== images - changed) throw new Error(`kept ${result.now.reused} rows, expected ${images - changed}`);
      // Every kept row is the earlier pass's, bit for bit.
      const rowBytes = 4 * result.now.features.shape[1];
      const was = Buffer.from(result.earlier.features.data().buffer), is = Buffer.from(result.now.features.data().buffer);
      const fresh = new Set(Array.from({ length: changed }, (_, k) => (r * changed + k) % images));
      for (let i = 0; i < images; i++) if (!fresh.has(i) && !was.subarray(i * rowBytes, (i + 1) * rowBytes).equals(is.subarray(i * rowBytes, (i + 1) * rowBytes))) keptExactly = false;
      updates.push(seconds);
      unchanged.push((await timed(update)).seconds);
    }
    const digest = await timed(() => pirl.weightsDigest(model));
    console.log(JSON.stringify({
      benchmark: 'embed', device: 'cpu', images, side, arch, width, changed, reps,
      fullSeconds: median(full),
      updateSeconds: median(updates),
      unchangedSeconds: median(unchanged),
      speedup: median(full) / median(updates),
      weightsDigestSeconds: digest.seconds,
      keptRowsExact: keptExactly,
      threads: pirl.getNumThreads(),
    }));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
