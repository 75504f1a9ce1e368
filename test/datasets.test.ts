import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';

import { ArrayDataset, IdxDataset } from '../lib';
import { tmpDir } from './helpers';

describe('IdxDataset and ArrayDataset', () => {
  function idx(dims: number[], data: Uint8Array): Buffer {
    const head = Buffer.alloc(4 + 4 * dims.length);
    head[2] = 0x08;
    head[3] = dims.length;
    dims.forEach((d, i) => head.writeUInt32BE(d, 4 + 4 * i));
    return Buffer.concat([head, data]);
  }

  test('reads plain and gzipped IDX files with labels', async () => {
    const dir = tmpDir('pirl-data-');
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
    const dir = tmpDir('pirl-data-');
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
    expect(() => new ArrayDataset(new Uint8Array(12), [1, 2, 2, 3], { clases: ['a'] } as never)).toThrow('options.clases is not an option; options takes labels, classes');
  });
});
