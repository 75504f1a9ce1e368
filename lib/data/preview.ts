// A PNG that shows what the model is fed: per sample, the image view, its 9 jigsaw patches in their
// sampled order, and the same patches put back in their grid cells (the solved puzzle), composed with sharp.
import sharp, { type OverlayOptions } from 'sharp';

import { normalization } from '../config';
import { JIGSAW_CELLS, JIGSAW_PATCHES, patchCell } from './jigsaw';
import { disposeBatch, type Loader, type PirlBatch } from './loader';
import { writeFileAtomically } from '../safetensors';

const GAP = 2;

// Normalised CHW floats back to 8-bit HWC RGB.
function toRgb(chw: Float32Array, offset: number, size: number): Buffer {
  const { mean, std } = normalization();
  const plane = size * size;
  const out = Buffer.alloc(plane * 3);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      const v = (chw[offset + c * plane + i] * std[c] + mean[c]) * 255;
      out[i * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
    }
  }
  return out;
}

/** Writes a grid of `count` samples of epoch `epoch`: the image, its patches left to right, then the solved 3×3 grid. */
export async function writePreview(loader: Loader, file: string, { count, epoch, scale = Math.max(1, Math.round(96 / loader.config.imageSize)) }: { count: number; epoch: number; scale?: number }): Promise<void> {
  const order = loader.batchesOf(epoch).flat();
  let batch = await loader.makeBatch(order.slice(0, count), epoch);
  if (batch.indices.shape[0] < count && order.length > count) {
    // `count` rows of images that read: the unreadable among the first drawn are made up for by the next ones, each
    // tried once; the same (seed, epoch, index) makes the same sample in any batch.
    const readIn = (b: PirlBatch) => Array.from(b.indices.data() as BigInt64Array, Number);
    const kept = readIn(batch);
    disposeBatch(batch);
    for (let next = count; kept.length < count && next < order.length;) {
      const tried = order.slice(next, next + count - kept.length);
      next += tried.length;
      const more = await loader.makeBatch(tried, epoch);
      kept.push(...readIn(more));
      disposeBatch(more);
    }
    batch = await loader.makeBatch(kept, epoch);
  }
  try {
    await drawPreview(batch, loader, file, scale);
  } finally {
    disposeBatch(batch);
  }
}

async function drawPreview(batch: PirlBatch, loader: Loader, file: string, scale: number): Promise<void> {
  const { imageSize: S, patchSize: P } = loader.config;
  const images = batch.images.data() as Float32Array;
  const patches = batch.patches.data() as Float32Array;
  const permutations = batch.permutations.data() as BigInt64Array;
  const rows = batch.indices.shape[0];
  const grid = JIGSAW_CELLS * (P + GAP);
  const rowHeight = Math.max(S, grid) + GAP;
  const solvedLeft = S + 2 * GAP + JIGSAW_PATCHES * (P + GAP) + 2 * GAP;
  const width = solvedLeft + grid;
  const layers: OverlayOptions[] = [];
  for (let b = 0; b < rows; b++) {
    const top = b * rowHeight;
    layers.push({ input: toRgb(images, b * 3 * S * S, S), raw: { width: S, height: S, channels: 3 }, left: 0, top });
    for (let k = 0; k < JIGSAW_PATCHES; k++) {
      const input = toRgb(patches, (b * JIGSAW_PATCHES + k) * 3 * P * P, P);
      const raw = { width: P, height: P, channels: 3 as const };
      const { row, column } = patchCell(permutations, b, k);
      layers.push({ input, raw, left: S + 2 * GAP + k * (P + GAP), top });
      layers.push({ input, raw, left: solvedLeft + column * (P + GAP), top: top + row * (P + GAP) });
    }
  }
  const canvas = await sharp({ create: { width, height: rows * rowHeight, channels: 3, background: { r: 255, g: 255, b: 255 } } })
    .composite(layers)
    .png()
    .toBuffer();
  // Atomically: a full disk left a truncated PNG in place of an earlier preview, and libvips' words.
  await writeFileAtomically(file, await sharp(canvas).resize(width * scale, rows * rowHeight * scale, { kernel: 'nearest' }).png().toBuffer());
}
