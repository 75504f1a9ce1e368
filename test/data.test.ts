import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import * as zlib from 'zlib';

import { ArrayDataset, IdxDataset, ImageFolder, Loader, evalImages } from '../lib';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-data-'));

function gradient(w: number, h: number, channels = 3): Buffer {
  const px = Buffer.alloc(w * h * channels);
  for (let i = 0; i < w * h; i++) for (let c = 0; c < channels; c++) px[i * channels + c] = (i * (c + 3)) % 256;
  return px;
}
const raw = (w: number, h: number, channels: 1 | 3 | 4 = 3) => sharp(gradient(w, h, channels), { raw: { width: w, height: h, channels } });

async function writeAllKinds(dir: string): Promise<string[]> {
  const files: Array<[string, Promise<Buffer>]> = [
    ['a.jpg', raw(50, 40).jpeg().toBuffer()],
    ['b.png', raw(30, 30).png().toBuffer()],
    ['c.webp', raw(30, 20).webp().toBuffer()],
    ['d.gif', raw(24, 24).gif().toBuffer()],
    ['e.tiff', raw(20, 30).tiff().toBuffer()],
    ['f.avif', raw(32, 32).avif().toBuffer()],
    ['g-gray.png', raw(30, 30, 1).png().toBuffer()],
    ['h-rgba.png', raw(30, 30, 4).png().toBuffer()],
    ['i-16bit.png', raw(30, 30).toColourspace('rgb16').png().toBuffer()],
    ['j-cmyk.jpg', raw(30, 30).toColourspace('cmyk').jpeg().toBuffer()],
  ];
  for (const [name, data] of files) fs.writeFileSync(path.join(dir, name), await data);
  return files.map(([name]) => name);
}

describe('ImageFolder', () => {
  test('decodes every file kind to size×size 8-bit RGB', async () => {
    const dir = tmp();
    const names = await writeAllKinds(dir);
    const warnings: string[] = [];
    const folder = await ImageFolder.open(dir, { size: 16, onWarning: (m) => warnings.push(m) });
    expect(folder.length).toBe(names.length);
    expect(folder.labels).toBeNull();
    const { source, indices } = await folder.batchSource(names.map((_, i) => i));
    expect(warnings).toEqual([]);
    expect(indices).toEqual(names.map((_, i) => i));
    expect(source.shape).toEqual([names.length, 16, 16, 3]);
    // The gray image decodes to equal R, G and B.
    const px = source.data() as Uint8Array;
    const gray = folder.files.findIndex((f) => f.endsWith('g-gray.png')) * 16 * 16 * 3;
    expect(px[gray]).toBe(px[gray + 1]);
    expect(px[gray + 1]).toBe(px[gray + 2]);
  });

  test('applies the EXIF orientation', async () => {
    const dir = tmp();
    // 20 wide × 40 high: top half red, bottom half blue; orientation 6 turns it 90° clockwise.
    const px = Buffer.alloc(20 * 40 * 3);
    for (let y = 0; y < 40; y++) for (let x = 0; x < 20; x++) px[(y * 20 + x) * 3 + (y < 20 ? 0 : 2)] = 255;
    await sharp(px, { raw: { width: 20, height: 40, channels: 3 } }).jpeg({ quality: 100 }).withMetadata({ orientation: 6 }).toFile(path.join(dir, 'rotated.jpg'));
    const folder = await ImageFolder.open(dir, { size: 20 });
    const data = (await folder.batchSource([0])).source.data() as Uint8Array;
    const at = (x: number, y: number) => Array.from(data.subarray((y * 20 + x) * 3, (y * 20 + x) * 3 + 3));
    // After turning clockwise the red (former top) half is on the right, blue on the left.
    expect(at(17, 10)[0]).toBeGreaterThan(200);
    expect(at(2, 10)[2]).toBeGreaterThan(200);
  });

  test('class subfolders give labels and class names', async () => {
    const dir = tmp();
    for (const cls of ['cats', 'dogs']) {
      fs.mkdirSync(path.join(dir, cls));
      for (let i = 0; i < 3; i++) await raw(20, 20).png().toFile(path.join(dir, cls, `${i}.png`));
    }
    const folder = await ImageFolder.open(dir, { size: 8 });
    expect(folder.classes).toEqual(['cats', 'dogs']);
    expect(Array.from(folder.labels!)).toEqual([0, 0, 0, 1, 1, 1]);
  });

  test('corrupt, truncated, empty and non-image files are skipped with one warning each', async () => {
    const dir = tmp();
    await writeAllKinds(dir);
    const jpeg = await raw(64, 64).jpeg().toBuffer();
    fs.writeFileSync(path.join(dir, 'x-corrupt.jpg'), Buffer.from(Array.from({ length: 500 }, (_, i) => (i * 37) % 256)));
    fs.writeFileSync(path.join(dir, 'x-truncated.jpg'), jpeg.subarray(0, Math.floor(jpeg.length / 2)));
    fs.writeFileSync(path.join(dir, 'x-empty.png'), Buffer.alloc(0));
    fs.writeFileSync(path.join(dir, 'x-text.png'), 'this is not an image');
    const warnings: string[] = [];
    const folder = await ImageFolder.open(dir, { size: 16, onWarning: (m) => warnings.push(m) });
    const loader = new Loader(folder, { batchSize: 4, dropLast: false, config: { imageSize: 16, jigsawSize: 18, patchSize: 6 } });
    let seen = 0;
    for (let epoch = 0; epoch < 2; epoch++) for await (const batch of loader.epoch(epoch)) seen += batch.indices.shape[0];
    expect(seen).toBe(2 * 10);
    const broken = ['x-corrupt.jpg', 'x-empty.png', 'x-text.png', 'x-truncated.jpg'];
    expect([...folder.failures.keys()].map((f) => path.basename(f)).sort()).toEqual(broken);
    expect(warnings).toHaveLength(4); // once per file, not once per epoch
    expect(warnings.join('\n')).toMatch(/x-truncated\.jpg/);
  });

  test('an empty or unreadable folder is an error before training starts', async () => {
    const empty = tmp();
    await expect(ImageFolder.open(empty)).rejects.toThrow(/no images \(looked for \.jpg/);
    const unreadable = tmp();
    fs.writeFileSync(path.join(unreadable, 'a.jpg'), 'nope');
    await expect(ImageFolder.open(unreadable, { onWarning: () => undefined })).rejects.toThrow(/none of the first 1 images could be decoded/);
    await expect(ImageFolder.open(path.join(empty, 'missing'))).rejects.toThrow(/no such folder/);
  });

  test('the cache decodes once, and is rebuilt when a file or the size changes', async () => {
    const dir = tmp();
    await writeAllKinds(dir);
    const cache = path.join(tmp(), 'images.cache');
    const first = await ImageFolder.open(dir, { size: 16, cache });
    const a = (await first.batchSource([0, 1, 2])).source.data().slice();
    await first.close();
    const built = fs.statSync(cache).mtimeMs;
    const second = await ImageFolder.open(dir, { size: 16, cache });
    expect(fs.statSync(cache).mtimeMs).toBe(built); // reused
    expect([...(await second.batchSource([0, 1, 2])).source.data()]).toEqual([...a]);
    await second.close();
    await new Promise((r) => setTimeout(r, 20));
    await raw(50, 40).negate().jpeg().toFile(path.join(dir, 'a.jpg')); // content changes
    const third = await ImageFolder.open(dir, { size: 16, cache });
    expect(fs.statSync(cache).mtimeMs).not.toBe(built);
    expect([...(await third.batchSource([0])).source.data()]).not.toEqual([...a.subarray(0, 16 * 16 * 3)]);
    await third.close();
    const resized = await ImageFolder.open(dir, { size: 8, cache });
    expect((await resized.batchSource([0])).source.shape).toEqual([1, 8, 8, 3]);
    await resized.close();
  });
});

describe('IdxDataset and ArrayDataset', () => {
  function idx(dims: number[], data: Uint8Array): Buffer {
    const head = Buffer.alloc(4 + 4 * dims.length);
    head[2] = 0x08;
    head[3] = dims.length;
    dims.forEach((d, i) => head.writeUInt32BE(d, 4 + 4 * i));
    return Buffer.concat([head, data]);
  }

  test('reads plain and gzipped IDX files with labels', async () => {
    const dir = tmp();
    const images = Uint8Array.from({ length: 3 * 4 * 5 }, (_, i) => i);
    fs.writeFileSync(path.join(dir, 'img.idx'), idx([3, 4, 5], images));
    fs.writeFileSync(path.join(dir, 'lbl.idx.gz'), zlib.gzipSync(idx([3], Uint8Array.from([7, 8, 9]))));
    const ds = await IdxDataset.open(path.join(dir, 'img.idx'), path.join(dir, 'lbl.idx.gz'));
    expect(ds.length).toBe(3);
    expect(ds.source.shape).toEqual([3, 4, 5, 1]);
    expect(Array.from(ds.labels!)).toEqual([7, 8, 9]);
    expect([...ds.source.data()].slice(20, 23)).toEqual([20, 21, 22]);
  });

  test('bad IDX files are refused clearly', async () => {
    const dir = tmp();
    fs.writeFileSync(path.join(dir, 'short.idx'), idx([3, 4, 5], new Uint8Array(10)));
    await expect(IdxDataset.open(path.join(dir, 'short.idx'))).rejects.toThrow(/IDX header says 3×4×5 = 60 bytes, the file holds 10/);
    fs.writeFileSync(path.join(dir, 'junk.idx'), 'hello world, not idx');
    await expect(IdxDataset.open(path.join(dir, 'junk.idx'))).rejects.toThrow(/not an IDX file/);
    fs.writeFileSync(path.join(dir, 'img.idx'), idx([2, 2, 2], new Uint8Array(8)));
    fs.writeFileSync(path.join(dir, 'lbl.idx'), idx([3], new Uint8Array(3)));
    await expect(IdxDataset.open(path.join(dir, 'img.idx'), path.join(dir, 'lbl.idx'))).rejects.toThrow(/3 labels for 2 images/);
  });

  test('Fashion-MNIST from Debian', async () => {
    const train = await IdxDataset.fashionMnist('train');
    expect(train.length).toBe(60000);
    expect(train.classes![9]).toBe('Ankle boot');
    await expect(IdxDataset.fashionMnist('train', '/nonexistent')).rejects.toThrow(/apt-get install dataset-fashion-mnist/);
  });

  test('ArrayDataset validates its buffer', () => {
    expect(() => new ArrayDataset(new Uint8Array(10), [1, 2, 2, 3])).toThrow(/12 bytes for shape \[1, 2, 2, 3\], got 10/);
    expect(() => new ArrayDataset(new Uint8Array(8), [1, 2, 2, 2])).toThrow(/shape\[3\] must be 1 \(gray\) or 3 \(RGB\) channels, got 2/);
    expect(() => new ArrayDataset(new Uint8Array(12), [1, 2, 2, 3], { labels: new Int32Array(2) })).toThrow(/options.labels/);
  });
});

describe('Loader', () => {
  const ds = new ArrayDataset(Uint8Array.from({ length: 20 * 12 * 12 * 3 }, (_, i) => (i * 7) % 256), [20, 12, 12, 3], {
    labels: Int32Array.from({ length: 20 }, (_, i) => i % 4),
  });
  const config = { imageSize: 12, jigsawSize: 12, patchSize: 4 };

  test('order: a permutation per epoch, fixed by (seed, epoch); dropLast and epochLength', () => {
    const loader = new Loader(ds, { batchSize: 6, seed: 3, config });
    const e0 = loader.batchesOf(0), again = new Loader(ds, { batchSize: 6, seed: 3, config }).batchesOf(0);
    expect(e0).toEqual(again);
    expect(e0).toHaveLength(3); // 20 / 6, last partial batch dropped
    expect(new Set(e0.flat()).size).toBe(18);
    expect(loader.batchesOf(1)).not.toEqual(e0);
    expect(new Loader(ds, { batchSize: 6, dropLast: false, config }).batchesOf(0).flat().sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(new Loader(ds, { batchSize: 6, epochLength: 2, config }).batchesOf(0)).toHaveLength(2);
    // batchesPerEpoch counts what batchesOf makes, with and without dropLast and epochLength
    for (const o of [{ batchSize: 6 }, { batchSize: 6, dropLast: false }, { batchSize: 6, epochLength: 2 }, { batchSize: 5 }]) {
      const l = new Loader(ds, { ...o, config });
      expect(l.batchesPerEpoch).toBe(l.batchesOf(0).length);
    }
    expect(new Loader(ds, { batchSize: 5, shuffle: false, config }).batchesOf(0)[0]).toEqual([0, 1, 2, 3, 4]);
  });

  test('batches: tensors of the config, labels and indices, the same for the same (seed, epoch)', async () => {
    const loader = new Loader(ds, { batchSize: 5, seed: 1, config });
    const first: string[] = [];
    for await (const b of loader.epoch(0)) {
      expect(b.images.shape).toEqual([5, 3, 12, 12]);
      expect(b.patches.shape).toEqual([5, 9, 3, 4, 4]);
      const idx = Array.from(b.indices.data() as BigInt64Array, Number);
      expect(Array.from(b.labels!)).toEqual(idx.map((i) => i % 4));
      first.push(Buffer.from((b.images.data() as Float32Array).buffer).toString('base64').slice(0, 64));
    }
    const second: string[] = [];
    for await (const b of new Loader(ds, { batchSize: 5, seed: 1, config }).epoch(0)) {
      second.push(Buffer.from((b.images.data() as Float32Array).buffer).toString('base64').slice(0, 64));
    }
    expect(second).toEqual(first);
  });

  test('at most `prefetch` batches are made ahead', async () => {
    let active = 0, peak = 0;
    const slow = {
      length: ds.length, labels: null, classes: null,
      async batchSource(indices: readonly number[]) {
        active++;
        peak = Math.max(peak, active);
        await new Promise((r) => setTimeout(r, 5));
        active--;
        return ds.batchSource(indices);
      },
    };
    const loader = new Loader(slow, { batchSize: 2, prefetch: 3, config });
    for await (const b of loader.epoch(0)) {
      expect(b.images.shape[0]).toBe(2);
      await new Promise((r) => setTimeout(r, 10)); // a slow consumer
    }
    expect(peak).toBeLessThanOrEqual(3);
    expect(peak).toBeGreaterThanOrEqual(2);
  });

  test('options are validated', () => {
    expect(() => new Loader(ds, { batchSize: 0 })).toThrow(/options.batchSize must be an integer >= 1, got 0/);
    expect(() => new Loader(ds, { batchSize: 50 })).toThrow(/larger than the data set \(20\) with dropLast/);
    expect(() => new Loader(ds, { config: { jigsawSize: 10 } })).toThrow(/config.jigsawSize must be a multiple of 3, got 10/);
    expect(() => new Loader(ds, { config: { patchSize: 20 } })).toThrow(/config.patchSize must be at most jigsawSize\/3 = 12, got 20/);
    expect(() => new Loader(ds, { config: { hue: 0.9 } })).toThrow(/config.hue must be a number in \[0, 0.5\], got 0.9/);
    expect(() => new Loader(ds, { config: 'huge' as never })).toThrow(/config.preset must be 'paper' or 'small', got "huge"/);
    expect(() => new Loader({} as never)).toThrow(/dataset must be a Dataset/);
  });

  test('evalImages: the whole image, resized and normalised', async () => {
    const { images, indices } = await evalImages(ds, [3, 4], 16);
    expect(images.shape).toEqual([2, 3, 16, 16]);
    expect(indices).toEqual([3, 4]);
  });
});

describe('pirl preview', () => {
  test('writes a PNG grid of images and their patches', async () => {
    const { execFileSync } = await import('child_process');
    const dir = tmp();
    for (let i = 0; i < 4; i++) await raw(40, 40).png().toFile(path.join(dir, `${i}.png`));
    const out = path.join(dir, 'preview.png');
    execFileSync(process.execPath, [path.join(__dirname, '..', 'dist', 'cli.js'), 'preview', dir, '--out', out, '--count', '3']);
    const meta = await sharp(out).metadata();
    expect(meta.format).toBe('png');
    // small preset: rows of max(32 px image, 3×(9+2) px solved grid) + 2 gap; image, 9 patches of 9 px, the grid; scaled ×3
    expect(meta.height).toBe(3 * 35 * 3);
    expect(meta.width).toBe((32 + 4 + 9 * 11 + 4 + 3 * 11) * 3);
  });
});
