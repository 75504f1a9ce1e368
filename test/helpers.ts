// Small fixtures shared by the jest suites.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';

/** A fresh temporary folder. */
export const tmpDir = (prefix = 'pirl-test-'): string => fs.mkdtempSync(path.join(os.tmpdir(), prefix));

/** w×h pixels of a deterministic gradient with `channels` channels. */
export function gradient(w: number, h: number, channels = 3): Buffer {
  const px = Buffer.alloc(w * h * channels);
  for (let i = 0; i < w * h; i++) for (let c = 0; c < channels; c++) px[i * channels + c] = (i * (c + 3)) % 256;
  return px;
}

/** A sharp pipeline over that gradient, to encode as any image format. */
export const raw = (w: number, h: number, channels: 1 | 3 | 4 = 3) => sharp(gradient(w, h, channels), { raw: { width: w, height: h, channels } });

/** b rows of d random values, each row scaled to unit length. */
export function unitRows(b: number, d: number): Float32Array {
  const out = new Float32Array(b * d).map(() => Math.random() - 0.5);
  for (let i = 0; i < b; i++) {
    const row = out.subarray(i * d, (i + 1) * d);
    const n = Math.hypot(...row);
    row.forEach((v, j) => (row[j] = v / n));
  }
  return out;
}
