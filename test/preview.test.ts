import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';

import { ArrayDataset, JIGSAW_PATCHES, Loader } from '../lib';
import { writePreview } from '../lib/data/preview';
import { gradient, raw, tmpDir } from './helpers';

describe('pirl preview', () => {
  test('writes a PNG grid of images and their patches', async () => {
    const dir = tmpDir('pirl-preview-');
    for (let i = 0; i < 4; i++) await raw(40, 40).png().toFile(path.join(dir, `${i}.png`));
    const out = path.join(tmpDir('pirl-preview-out-'), 'preview.png'); // outside the data folder
    execFileSync(process.execPath, [path.join(__dirname, '..', 'dist', 'cli.js'), 'preview', dir, '--out', out, '--count', '3']);
    const meta = await sharp(out).metadata();
    expect(meta.format).toBe('png');
    // small preset: rows of max(32 px image, 3×(9+2) px solved grid) + 2 gap; image, 9 patches of 9 px, the grid; scaled ×3
    expect(meta.height).toBe(3 * 35 * 3);
    expect(meta.width).toBe((32 + 4 + 9 * 11 + 4 + 3 * 11) * 3);
    // Unreadable images drawn among the first are made up for by the next (a row short before, unsaid).
    for (let i = 0; i < 6; i++) fs.writeFileSync(path.join(dir, `bad${i}.png`), 'not a png');
    for (const count of [3, 4]) {
      execFileSync(process.execPath, [path.join(__dirname, '..', 'dist', 'cli.js'), 'preview', dir, '--out', out, '--count', String(count)], { stdio: 'pipe' });
      expect((await sharp(out).metadata()).height).toBe(count * 35 * 3);
    }
  });

  test('the solved grid puts each patch back in the cell its permutation names', async () => {
    const data = new ArrayDataset(gradient(48, 48), [1, 48, 48, 3]);
    const loader = new Loader(data, { batchSize: 1, seed: 3, config: 'small' });
    const file = path.join(tmpDir('pirl-preview-'), 'one.png');
    await writePreview(loader, file, { count: 1, epoch: 0, scale: 1 });
    const { data: png, info } = await sharp(file).raw().toBuffer({ resolveWithObject: true });
    const batch = await loader.makeBatch(loader.batchesOf(0).flat().slice(0, 1), 0);
    const permutations = batch.permutations.data() as BigInt64Array;
    const P = 9, S = 32, GAP = 2;
    const solvedLeft = S + 2 * GAP + JIGSAW_PATCHES * (P + GAP) + 2 * GAP;
    const at = (x: number, y: number) => (y * info.width + x) * info.channels;
    const pixel = (x: number, y: number) => Array.from(png.subarray(at(x, y), at(x, y) + 3));
    for (let k = 0; k < JIGSAW_PATCHES; k++) {
      // As PirlBatch documents it: patch k comes from cell permutations[k] of the 3×3 grid, row-major.
      const cell = Number(permutations[k]), row = Math.floor(cell / 3), column = cell % 3;
      for (const [dx, dy] of [[0, 0], [4, 4], [8, 8]]) {
        expect(pixel(solvedLeft + column * (P + GAP) + dx, row * (P + GAP) + dy)).toEqual(pixel(S + 2 * GAP + k * (P + GAP) + dx, dy));
      }
    }
    expect(new Set(Array.from(permutations, Number)).size).toBe(9);
  });
});
