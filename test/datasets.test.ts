import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';

import { ArrayDataset, IdxDataset, Subset, holdOut } from '../lib';
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

  test('IdxDataset.open reads regular files only, named by its argument (a FIFO waited forever, /dev/zero read 2 GiB)', async () => {
    const dir = tmpDir('pirl-data-');
    const fifo = path.join(dir, 'images.fifo');
    execFileSync('mkfifo', [fifo]);
    fs.writeFileSync(path.join(dir, 'img.idx'), idx([2, 2, 2], new Uint8Array(8)));
    await expect(IdxDataset.open(fifo)).rejects.toThrow(`imagesFile must be a regular file (not a FIFO, a device or a folder), got ${JSON.stringify(fifo)}`);
    await expect(IdxDataset.open(path.join(dir, 'img.idx'), fifo)).rejects.toThrow(`labelsFile must be a regular file (not a FIFO, a device or a folder), got ${JSON.stringify(fifo)}`);
    // A device is refused before it is read (/dev/null read as an empty, "not an IDX" file).
    await expect(IdxDataset.open('/dev/null')).rejects.toThrow('imagesFile must be a regular file (not a FIFO, a device or a folder), got "/dev/null"');
    await expect(IdxDataset.open(dir)).rejects.toThrow(`imagesFile must be a regular file (not a FIFO, a device or a folder), got ${JSON.stringify(dir)}`);
  }, 10_000);

  test("IdxDataset.open's arguments are named: no file, and a header with a side of 0 names its file", async () => {
    await expect(IdxDataset.open(undefined as never)).rejects.toThrow('imagesFile must be a file path, got undefined');
    const dir = tmpDir('pirl-data-');
    fs.writeFileSync(path.join(dir, 'img.idx'), idx([2, 2, 2], new Uint8Array(8)));
    await expect(IdxDataset.open(path.join(dir, 'img.idx'), 5 as never)).rejects.toThrow('labelsFile must be a file path, got 5');
    const flat = path.join(dir, 'flat.idx');
    fs.writeFileSync(flat, idx([3, 0, 5], new Uint8Array(0)));
    await expect(IdxDataset.open(flat)).rejects.toThrow(`${flat}: IDX header says 3×0×5: an image side of 0`);
  });

  test('classes and labels are checked when the data set is made: class names, distinct, one for each label; labels >= 0', async () => {
    const make = (options: object) => () => new ArrayDataset(new Uint8Array(3 * 4), [3, 2, 2, 1], options as never);
    const labels = Int32Array.from([0, 2, 1]);
    // A string was stored, and matched by substring where class names are compared ('cat' in 'wildcat').
    expect(make({ labels, classes: 'wildcat' })).toThrow('options.classes must be an array of class names, got "wildcat"');
    expect(make({ labels, classes: [1, 2, 3] })).toThrow('options.classes[0] must be a class name (a string), got 1');
    expect(make({ labels, classes: ['a', 'b', 'a'] })).toThrow("options.classes[2] must be a name other than options.classes[0]'s (each class once), got \"a\"");
    expect(make({ labels, classes: ['a', 'b'] })).toThrow('options.classes must be at least 3 class names (one for each label up to the largest of options.labels, 2), got ["a", "b"]');
    expect(make({ labels: Int32Array.from([0, -1, 1]), classes: ['a', 'b'] })).toThrow('options.labels[1] must be a label >= 0, got -1');
    // More names than labels (a test set without some classes) and names without labels are fine; the names are a copy.
    const names = ['a', 'b', 'c', 'd'];
    const ds = make({ labels, classes: names })();
    names[0] = 'z';
    expect(ds.classes).toEqual(['a', 'b', 'c', 'd']);
    expect(make({ classes: ['a'] })().classes).toEqual(['a']);
    // IdxDataset.open names its own argument.
    const dir = tmpDir('pirl-data-');
    fs.writeFileSync(path.join(dir, 'img.idx'), idx([3, 1, 1], new Uint8Array(3)));
    fs.writeFileSync(path.join(dir, 'lbl.idx'), idx([3], Uint8Array.from([7, 8, 9])));
    await expect(IdxDataset.open(path.join(dir, 'img.idx'), path.join(dir, 'lbl.idx'), ['a'])).rejects.toThrow(
      'classes must be at least 10 class names (one for each label up to the largest of labelsFile, 9), got ["a"]');
    await expect(IdxDataset.open(path.join(dir, 'img.idx'), undefined, 'abc' as never)).rejects.toThrow('classes must be an array of class names, got "abc"');
  });

  test('Subset and holdOut refuse what they cannot split: a sample twice, a base that is no data set, no data set at all', () => {
    const base = new ArrayDataset(new Uint8Array(10 * 4), [10, 2, 2, 1], { labels: Int32Array.from({ length: 10 }, (_, i) => i % 2) });
    expect(() => new Subset(base, [3, 0, 3])).toThrow('indices[2] must be a sample not already at indices[0] (each sample once), got 3');
    expect(() => new Subset({} as never, [5])).toThrow('base must be a Dataset (ArrayDataset, IdxDataset, ImageFolder), got an object');
    expect(() => new Subset({ length: 'ten', labels: null, classes: null, batchSource: async () => undefined } as never, [5])).toThrow('base.length must be an integer >= 0, got "ten"');
    expect(() => new Subset(base, [0, 10])).toThrow('indices must be integers in [0, 10), got 10');
    expect(() => new Subset(base, '12' as never)).toThrow('indices must be an array of sample indices, got "12"');
    // The indices are a copy: the caller's array changed later does not change the split.
    const picked = [4, 1];
    const subset = new Subset(base, picked);
    picked[0] = 1;
    expect([subset.indices, [...subset.labels!]]).toEqual([[4, 1], [0, 1]]);
    expect(() => holdOut(null as never)).toThrow('dataset must be a Dataset (ArrayDataset, IdxDataset, ImageFolder), got null');
    expect(() => holdOut(undefined as never)).toThrow('dataset must be a Dataset (ArrayDataset, IdxDataset, ImageFolder), got undefined');
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
