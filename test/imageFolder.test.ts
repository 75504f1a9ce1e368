import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import sharp from 'sharp';

import { AmbiguousLayoutError, ArrayDataset, IMAGE_EXTENSIONS, ImageFolder, Loader, Subset, Tensor, holdOut, serializeSafetensors, type BatchSource } from '../lib';
import { dataDigest } from '../lib/data/digest';
import { tmpDir, raw } from './helpers';

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
  test('images are decoded a few at a time in the whole process (each decode is a job on libuv\'s pool and starts a sharp pipeline on the JS thread)', async () => {
    const dir = tmpDir();
    try {
      const limit = 2 * Number(process.env.UV_THREADPOOL_SIZE); // decodes in flight (imageFolder.ts), 2 per pool thread
      const count = limit; // each batch alone fills the pool: both make twice as many decodes as may be in flight
      for (let i = 0; i < count; i++) await raw(20 + i, 20).png().toFile(path.join(dir, `${String(i).padStart(2, '0')}.png`));
      const [a, b] = [await ImageFolder.open(dir, { size: 8 }), await ImageFolder.open(dir, { size: 8 })];
      const alone = await Promise.all(Array.from({ length: count }, (_, i) => a.decode(i)));
      let inFlight = 0, most = 0;
      for (const folder of [a, b]) {
        const decodeNow = (folder as unknown as { decodeNow: (...args: unknown[]) => Promise<Buffer> }).decodeNow.bind(folder);
        jest.spyOn(folder as never, 'decodeNow').mockImplementation((async (...args: unknown[]) => {
          most = Math.max(most, ++inFlight);
          return decodeNow(...args).finally(() => inFlight--);
        }) as never);
      }
      const reversed = Array.from({ length: count }, (_, i) => count - 1 - i);
      const [x, y] = await Promise.all([a.batchSource(reversed), b.batchSource(reversed)]);
      expect(most).toBe(limit); // of the two batches' 2 * count decodes, as many as keep libuv's pool busy
      for (const { source, indices, owned } of [x, y]) {
        expect(owned).toBe(true); // the batch's own tensor: the loader disposes it once the batch is made
        expect(indices).toEqual(reversed);
        expect(Buffer.from(source.data() as Uint8Array)).toEqual(Buffer.concat(indices.map((i) => alone[i]!)));
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("close() lets a batch being read from the cache end, and one asked during it decodes (it failed: EBADF 'file closed'); later ones decode too", async () => {
    const dir = tmpDir('pirl-data-');
    try {
      const n = 40;
      for (let i = 0; i < n; i++) await raw(8 + (i % 5), 8).png().toFile(path.join(dir, `${String(i).padStart(3, '0')}.png`));
      const folder = await ImageFolder.open(dir, { size: 8, cache: path.join(dir, 'images.cache') });
      const all = Array.from({ length: n }, (_, i) => i);
      const expected = Buffer.from((await folder.batchSource(all)).source.data() as Uint8Array);
      // Asked while a close is under way with nothing read (a loader's next batch after fit's callback closed it).
      const closing = folder.close();
      const late = folder.batchSource(all.slice(n / 2));
      await closing;
      expect(Buffer.from((await late).source.data() as Uint8Array)).toEqual(expected.subarray((n / 2) * 8 * 8 * 3));
      expect(Buffer.from((await folder.batchSource(all)).source.data() as Uint8Array)).toEqual(expected); // decoded: the same pixels
      // Closed while a batch reads: it ends first.
      const again = await ImageFolder.open(dir, { size: 8, cache: path.join(dir, 'images.cache') });
      const reading = again.batchSource(all);
      await again.close();
      expect(Buffer.from((await reading).source.data() as Uint8Array)).toEqual(expected);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  test('files without an image extension are said to be left out (not hidden files, nor the folder\'s own cache)', async () => {
    const dir = tmpDir('pirl-data-');
    try {
      for (const name of ['a.png', 'b.png']) await raw(20, 20).png().toFile(path.join(dir, name));
      for (const name of ['notes.txt', 'scan.bmp', 'README', '.DS_Store']) fs.writeFileSync(path.join(dir, name), 'x');
      const warnings: string[] = [];
      const folder = await ImageFolder.open(dir, { size: 8, cache: path.join(dir, 'images.cache'), onWarning: (m) => warnings.push(m) });
      expect(folder.length).toBe(2);
      await folder.close();
      const again = await ImageFolder.open(dir, { size: 8, cache: path.join(dir, 'images.cache'), onWarning: (m) => warnings.push(m) });
      expect(again.length).toBe(2);
      await again.close();
      const said = `${dir}: 3 file(s) without an image extension are left out (README, notes.txt, scan.bmp; read: .jpg .jpeg .png .webp .gif .tif .tiff .avif)`;
      expect(warnings).toEqual([said, said]); // the cache written the first time is not counted the second
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('decodes every file kind to size×size 8-bit RGB', async () => {
    const dir = tmpDir('pirl-data-');
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
    const dir = tmpDir('pirl-data-');
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
    const dir = tmpDir('pirl-data-');
    for (const cls of ['cats', 'dogs']) {
      fs.mkdirSync(path.join(dir, cls));
      for (let i = 0; i < 3; i++) await raw(20, 20).png().toFile(path.join(dir, cls, `${i}.png`));
    }
    const folder = await ImageFolder.open(dir, { size: 8 });
    expect(folder.classes).toEqual(['cats', 'dogs']);
    expect(Array.from(folder.labels!)).toEqual([0, 0, 0, 1, 1, 1]);
    // Images beside the class folders, or below a class folder's own, are left out — with a warning.
    await raw(20, 20).png().toFile(path.join(dir, 'loose.png'));
    fs.mkdirSync(path.join(dir, 'cats', 'kittens', 'tiny'), { recursive: true });
    await raw(20, 20).png().toFile(path.join(dir, 'cats', 'kittens', 'k.png'));
    await raw(20, 20).png().toFile(path.join(dir, 'cats', 'kittens', 'tiny', 't.png'));
    const warnings: string[] = [];
    const again = await ImageFolder.open(dir, { size: 8, layout: 'classes', onWarning: (m) => warnings.push(m) });
    expect(again.length).toBe(6);
    expect(warnings).toEqual([
      expect.stringMatching(/1 image\(s\) beside the class folders are not in a class and are left out/),
      `${dir}: 2 image(s) in subfolders of class folders are left out (${path.join('cats', 'kittens')}, ${path.join('cats', 'kittens', 'tiny')}; a class is its folder's own images: recursive (--recursive) reads those below too)`,
    ]);
    // A would-be class whose images are one level deeper, and an empty folder: no class, said (they vanished silently).
    fs.rmSync(path.join(dir, 'loose.png'));
    fs.rmSync(path.join(dir, 'cats', 'kittens'), { recursive: true });
    fs.mkdirSync(path.join(dir, 'birds', '2019'), { recursive: true });
    await raw(20, 20).png().toFile(path.join(dir, 'birds', '2019', 'b.png'));
    fs.mkdirSync(path.join(dir, 'fish'));
    warnings.length = 0;
    const deeper = await ImageFolder.open(dir, { size: 8, onWarning: (m) => warnings.push(m) });
    expect(deeper.classes).toEqual(['cats', 'dogs']);
    expect(warnings).toEqual([
      `${dir}: 1 image(s) in subfolders of folders that hold no images of their own are left out (${path.join('birds', '2019')}; a class is its folder's own images: recursive (--recursive) reads those below too)`,
      `${dir}: 1 subfolder(s) hold no images and are no class (fish)`,
    ]);
    // Not walked: links out of the data folder (to /, to ..) and to a class, nor the cache's folder; files of other
    // extensions are said as such.
    fs.symlinkSync('/', path.join(dir, 'root'));
    fs.symlinkSync('..', path.join(dir, 'up'));
    fs.symlinkSync(path.join(dir, 'cats'), path.join(dir, 'felines'));
    fs.writeFileSync(path.join(dir, 'fish', 'notes.txt'), 'no image');
    fs.mkdirSync(path.join(dir, 'cache'));
    warnings.length = 0;
    const walked = await ImageFolder.open(dir, { size: 8, cache: path.join(dir, 'cache', 'c.bin'), onWarning: (m) => warnings.push(m) });
    expect(walked.classes).toEqual(['cats', 'dogs', 'felines']);
    expect(warnings.filter((w) => !w.includes('subfolders of folders'))).toEqual([
      `${dir}: 1 subfolder(s) hold no images and are no class (fish (1 file(s) without an image extension))`,
    ]);
  });

  test('recursive reads the images below at any depth: a class is every image below its folder (torchvision\'s ImageFolder), a flat folder every image below it', async () => {
    const dir = tmpDir('pirl-data-'), elsewhere = tmpDir('pirl-data-');
    try {
      const image = async (...at: string[]) => {
        fs.mkdirSync(path.join(dir, ...at.slice(0, -1)), { recursive: true });
        await raw(20, 20).png().toFile(path.join(dir, ...at));
      };
      await image('shoes', 'a.png');
      await image('shoes', '2019', 'q1', 'c.png');
      await image('shoes', '2019', 'b.png');
      await image('bags', '2020', 'd.png'); // a class whose images are all deeper
      await image('bags', '.thumbs', 'hidden.png'); // hidden: no image
      await raw(20, 20).png().toFile(path.join(elsewhere, 'e.png'));
      fs.mkdirSync(path.join(dir, 'empty', 'sub'), { recursive: true });
      fs.writeFileSync(path.join(dir, 'shoes', '2019', 'notes.txt'), 'no image');
      // Links: back up the tree (read once), to another class (read there, not as shoes), to a folder of its own class (read
      // once); out of the data folder, or to it (not followed, said).
      fs.symlinkSync(path.join(dir, 'shoes'), path.join(dir, 'shoes', '2019', 'up'));
      fs.symlinkSync(path.join(dir, 'bags'), path.join(dir, 'shoes', 'bags-too'));
      fs.symlinkSync(path.join(dir, 'shoes', '2019', 'q1'), path.join(dir, 'shoes', 'q1-again'));
      fs.symlinkSync(elsewhere, path.join(dir, 'shoes', 'elsewhere'));
      fs.symlinkSync('.', path.join(dir, 'self'));
      const warnings: string[] = [];
      const folder = await ImageFolder.open(dir, { size: 8, recursive: true, onWarning: (m) => warnings.push(m) });
      const names = (f: ImageFolder) => f.files.map((file) => path.relative(dir, file));
      expect([folder.classes, names(folder), [...folder.labels!]]).toEqual([['bags', 'shoes'],
        [path.join('bags', '2020', 'd.png'), path.join('shoes', 'a.png'), path.join('shoes', '2019', 'b.png'), path.join('shoes', '2019', 'q1', 'c.png')], [0, 1, 1, 1]]);
      expect(warnings).toEqual([
        `${dir}: 1 link(s) to folders out of it are not followed (${path.join('shoes', 'elsewhere')}): their images are left out`,
        `${dir}: 1 subfolder(s) hold no images and are no class (empty)`,
        `${dir}: 1 file(s) without an image extension are left out (${path.join('shoes', '2019', 'notes.txt')}; read: ${IMAGE_EXTENSIONS.join(' ')})`,
      ]);
      // Without it, the same folder: bags is no class, and the images below shoes' own are left out, said.
      warnings.length = 0;
      const own = await ImageFolder.open(dir, { size: 8, layout: 'classes', onWarning: (m) => warnings.push(m) });
      expect([own.classes, names(own)]).toEqual([['shoes'], [path.join('shoes', 'a.png')]]);
      expect(warnings.filter((w) => w.includes('left out') && !w.includes('extension'))).toHaveLength(2);
      // Flat: every image below, its own first, each folder once (bags-too is bags, alias shoes: read as themselves; two
      // links to one folder elsewhere, read through the first); listed alone too (a query folder).
      await image('own.png');
      fs.symlinkSync(path.join(dir, 'shoes'), path.join(dir, 'alias'));
      for (const link of ['ext-a', 'ext-b']) fs.symlinkSync(elsewhere, path.join(dir, link));
      const flat = await ImageFolder.open(dir, { size: 8, layout: 'flat', recursive: true, onWarning: () => undefined });
      expect(names(flat)).toEqual(['own.png', names(folder)[0], path.join('ext-a', 'e.png'), ...names(folder).slice(1)]);
      expect(await ImageFolder.list(dir, { layout: 'flat', recursive: true, onWarning: () => undefined })).toEqual(flat.files);
      await expect(ImageFolder.open(dir, { recursive: 'yes' as never })).rejects.toThrow('options.recursive must be a boolean, got "yes"');
      // A folder whose images are all deeper: found, not "no images".
      const onlyDeep = path.join(dir, 'empty');
      await image('empty', 'sub', 'x.png');
      expect((await ImageFolder.open(onlyDeep, { size: 8, recursive: true })).files).toEqual([path.join(onlyDeep, 'sub', 'x.png')]);
      // 'flat' says what it reads: every image below too.
      await expect(ImageFolder.open(dir, { size: 8, recursive: true, onWarning: () => undefined })).rejects.toThrow("with options.layout 'flat' (its images and those below, unlabeled)");
    } finally {
      fs.rmSync(elsewhere, { recursive: true, force: true });
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a folder with images of its own and subfolders of images: its layout must be said, then is followed', async () => {
    const dir = tmpDir('pirl-data-');
    for (let i = 0; i < 4; i++) await raw(20, 20).png().toFile(path.join(dir, `${i}.png`));
    fs.mkdirSync(path.join(dir, 'thumbnails'));
    await raw(10, 10).png().toFile(path.join(dir, 'thumbnails', 't.png'));
    // Before, the subfolder won: a flat folder with one stray subfolder trained on that subfolder alone.
    const ambiguous = ImageFolder.open(dir, { size: 8 });
    await expect(ambiguous).rejects.toThrow(AmbiguousLayoutError);
    await expect(ambiguous).rejects.toThrow(`${dir} holds 4 image(s) of its own and 1 subfolder(s) of images (thumbnails): say which is the data set with options.layout 'flat' (its own images, unlabeled) or 'classes' (one class per subfolder)`);
    const warnings: string[] = [];
    // Every level below is counted (it counted the subfolders' own images only).
    fs.mkdirSync(path.join(dir, 'thumbnails', 'small'));
    await raw(10, 10).png().toFile(path.join(dir, 'thumbnails', 'small', 's.png'));
    const flat = await ImageFolder.open(dir, { size: 8, layout: 'flat', onWarning: (m) => warnings.push(m) });
    expect([flat.length, flat.labels, flat.classes]).toEqual([4, null, null]);
    expect(warnings).toEqual([`${dir}: 2 image(s) in its subfolders are left out (thumbnails, ${path.join('thumbnails', 'small')}; layout 'flat' read the folder's own images: recursive (--recursive) reads those below too)`]);
    const classes = await ImageFolder.open(dir, { size: 8, layout: 'classes', onWarning: () => undefined });
    expect([classes.length, classes.classes]).toEqual([1, ['thumbnails']]);
    await expect(ImageFolder.open(dir, { size: 8, layout: 'tree' as 'flat' })).rejects.toThrow(/options\.layout must be one of 'auto', 'flat', 'classes', got "tree"/);
    // A layout that finds nothing says where it looked.
    const onlyOwn = tmpDir('pirl-data-');
    await raw(20, 20).png().toFile(path.join(onlyOwn, 'a.png'));
    await expect(ImageFolder.open(onlyOwn, { size: 8, layout: 'classes' })).rejects.toThrow(/no images \(looked for .* files, in class subfolders\)/);
    // …and why the images it holds are not read, in the error itself (a warning came after it).
    const onlyClasses = tmpDir('pirl-data-');
    fs.mkdirSync(path.join(onlyClasses, 'cats'));
    await raw(20, 20).png().toFile(path.join(onlyClasses, 'cats', 'a.png'));
    await expect(ImageFolder.open(onlyClasses, { size: 8, layout: 'flat' })).rejects.toThrow(/no images \(looked for .* files, directly in the folder; 1 image\(s\) are in its subfolders: layout 'classes' reads class folders\)$/);
    const onlyDeep = tmpDir('pirl-data-');
    fs.mkdirSync(path.join(onlyDeep, 'a', 'b'), { recursive: true });
    await raw(20, 20).png().toFile(path.join(onlyDeep, 'a', 'b', 'x.png'));
    await expect(ImageFolder.open(onlyDeep, { size: 8 })).rejects.toThrow(/1 image\(s\) are deeper in its subfolders, which only recursive \(--recursive\) reads\)$/);
    // The default warning names what happened: images left out, not unreadable ones (a process of its own:
    // jest's process object does not see the warnings of the real one).
    const script = `process.on('warning', (w) => console.log(w.code)); require('./dist').ImageFolder.open(${JSON.stringify(dir)}, { size: 8, layout: 'flat' });`;
    const r = spawnSync(process.execPath, ['-e', script], { cwd: path.join(__dirname, '..'), encoding: 'utf8' });
    expect(r.stdout.trim()).toBe('PIRL_IMAGES_LEFT_OUT');
    // 'classes' over a folder with no class folders: its own images are said as such, not as "beside the class folders".
    fs.rmSync(path.join(dir, 'thumbnails'), { recursive: true });
    const told: string[] = [];
    await expect(ImageFolder.open(dir, { size: 8, layout: 'classes', onWarning: (m) => told.push(m) })).rejects.toThrow(/no images/);
    expect(told).toEqual([`${dir}: its 4 image(s) are left out: layout 'classes' reads class folders (one subfolder of images per class), and it has none`]);
  });

  test('Subset and holdOut: a held-out fifth, renumbered, labels and samples following', async () => {
    const dir = tmpDir('pirl-data-');
    for (let i = 0; i < 10; i++) await sharp(Buffer.alloc(20 * 20 * 3, i * 20), { raw: { width: 20, height: 20, channels: 3 } }).png().toFile(path.join(dir, `${i}.png`));
    const folder = await ImageFolder.open(dir, { size: 8 });
    const { train, test } = holdOut(folder);
    expect([train.length, test.length]).toEqual([8, 2]);
    expect(test.indices).toEqual([4, 9]);
    const a = await test.batchSource([1, 0]);
    const b = await folder.batchSource([9, 4]);
    expect(a.indices).toEqual([1, 0]);
    expect(Buffer.from(a.source.data().buffer).equals(Buffer.from(b.source.data().buffer))).toBe(true);
    await expect(test.batchSource([2])).rejects.toThrow(/indices must be integers in \[0, 2\)/);
    // A split that leaves either side empty is refused.
    expect(() => holdOut(folder, 1)).toThrow(/every must be an integer >= 2, got 1/);
    expect(() => holdOut(folder, 11)).toThrow('dataset must be a data set of at least 11 samples (to hold out every 11th), got "10 samples"');
    // Unreadable images, which a cache leaves out of the samples: the same images held out with a cache as without.
    fs.writeFileSync(path.join(dir, '2.png'), 'not a png');
    fs.writeFileSync(path.join(dir, '4.png'), 'not a png either');
    const quiet = { size: 8, onWarning: () => undefined };
    const names = (d: Subset) => d.indices.map((i) => path.basename((d.base as ImageFolder).files[i]));
    const plain = holdOut(await ImageFolder.open(dir, quiet));
    const cached = await ImageFolder.open(dir, { ...quiet, cache: path.join(dir, '..', `${path.basename(dir)}.cache`) });
    expect(cached.length).toBe(8);
    const viaCache = holdOut(cached);
    expect(names(viaCache.test)).toEqual(['9.png']); // 4.png, held out without a cache, is unreadable
    expect(names(plain.test)).toEqual(['4.png', '9.png']);
    expect(names(viaCache.train)).toEqual(names(plain.train).filter((f) => f !== '2.png'));
    // No image of the held-out places readable: nothing to score, refused (as nothing to vote would be).
    fs.writeFileSync(path.join(dir, '9.png'), 'no png');
    const none = await ImageFolder.open(dir, { ...quiet, cache: path.join(dir, '..', `${path.basename(dir)}-2.cache`) });
    expect(() => holdOut(none)).toThrow('dataset must be a data set with readable images both among those held out (every 5th of its folder) and among the others, got "0 of its 7 held out"');
  });

  test('corrupt, truncated, empty and non-image files are skipped with one warning each', async () => {
    const dir = tmpDir('pirl-data-');
    await writeAllKinds(dir);
    const jpeg = await raw(64, 64).jpeg().toBuffer();
    fs.writeFileSync(path.join(dir, 'x-corrupt.jpg'), Buffer.from(Array.from({ length: 500 }, (_, i) => (i * 37) % 256)));
    const truncated = jpeg.subarray(0, Math.floor(jpeg.length / 2));
    fs.writeFileSync(path.join(dir, 'x-truncated.jpg'), truncated);
    // A PNG cut short inside its image data, and one with a byte of its image data changed (its chunk's checksum fails).
    const png = await raw(64, 64).png().toBuffer();
    const idat = png.indexOf('IDAT') - 4, idatEnd = idat + 12 + png.readUInt32BE(idat);
    fs.writeFileSync(path.join(dir, 'x-cut.png'), png.subarray(0, idat + 20));
    const flipped = Buffer.from(png);
    flipped[idat + 10] ^= 0x10;
    fs.writeFileSync(path.join(dir, 'x-flipped.png'), flipped);
    fs.writeFileSync(path.join(dir, 'x-empty.png'), Buffer.alloc(0));
    fs.writeFileSync(path.join(dir, 'x-text.png'), 'this is not an image');
    fs.writeFileSync(path.join(dir, 'x-page.jpg'), '<!DOCTYPE html><html><body>404 Not Found</body></html>');
    fs.writeFileSync(path.join(dir, 'x-bitmap.jpg'), Buffer.concat([Buffer.from('BM'), Buffer.alloc(60)]));
    // A whole PNG header of 20000×20000 (a decompression bomb): too large, not corrupt.
    const crc32 = (bytes: Buffer) => { // zlib.crc32 needs Node 20.15; pirl runs on 20.9
      let c = ~0;
      for (const b of bytes) {
        c ^= b;
        for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
      }
      return ~c >>> 0;
    };
    const chunk = (type: string, data: Buffer) => {
      const body = Buffer.concat([Buffer.from(type), data]);
      const framed = Buffer.alloc(body.length + 8);
      framed.writeUInt32BE(data.length, 0);
      body.copy(framed, 4);
      framed.writeUInt32BE(crc32(body), body.length + 4);
      return framed;
    };
    const ihdr = Buffer.from([0, 0, 0x4e, 0x20, 0, 0, 0x4e, 0x20, 8, 2, 0, 0, 0]);
    fs.writeFileSync(path.join(dir, 'x-huge.png'), Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(Buffer.alloc(10))), chunk('IEND', Buffer.alloc(0))]));
    // An SVG named .png (sharp decodes by content: librsvg could be asked for gigabytes, or draw the folder's other files).
    fs.writeFileSync(path.join(dir, 'x-vector.png'), '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"><image href="a.png" width="40" height="40"/></svg>');
    const warnings: string[] = [];
    const folder = await ImageFolder.open(dir, { size: 16, onWarning: (m) => warnings.push(m) });
    const loader = new Loader(folder, { batchSize: 4, dropLast: false, config: { imageSize: 16, jigsawSize: 18, patchSize: 6 } });
    let seen = 0;
    for (let epoch = 0; epoch < 2; epoch++) for await (const batch of loader.epoch(epoch)) seen += batch.indices.shape[0];
    expect(seen).toBe(2 * 10);
    // Each file's own reason, from what it holds (concurrent decodes share libvips's one error buffer).
    const reasons = Object.fromEntries([...folder.failures].map(([f, why]) => [path.basename(f), why]));
    expect(reasons).toEqual({
      'x-bitmap.jpg': 'a BMP image, which pirl does not read (convert it to JPEG or PNG)',
      'x-corrupt.jpg': 'not an image: its first bytes are 00 25 4a 6f 94 b9 de 03',
      'x-empty.png': 'an empty file (0 bytes)',
      'x-huge.png': "a PNG image too large to decode (20000×20000): more than sharp's limit of 268,402,689 pixels",
      'x-page.jpg': 'not an image: text starting "<!DOCTYPE html><html><body>404 Not Found"',
      'x-text.png': 'not an image: text starting "this is not an image"',
      'x-truncated.jpg': `a JPEG image that cannot be decoded: truncated: ${truncated.length.toLocaleString('en-US')} bytes, without the end-of-image marker`,
      'x-cut.png': `a PNG image that cannot be decoded: truncated: it ends inside its IDAT chunk (${idat + 20} of ${idatEnd.toLocaleString('en-US')} bytes)`,
      'x-flipped.png': `a PNG image that cannot be decoded: corrupt: the checksum of its IDAT chunk (at byte ${idat}) does not match its data`,
      'x-vector.png': 'an SVG image, which pirl does not read (convert it to JPEG or PNG)',
    });
    expect(warnings).toHaveLength(10); // once per file, not once per epoch
    expect(warnings.join('\n')).toMatch(/skipping unreadable image .*x-truncated\.jpg: a JPEG image/);
  });

  test('transparency is composited on white at every size (resizing made it black; an image at the stored side showed the hidden colour)', async () => {
    const dir = tmpDir('pirl-data-');
    try {
      // Transparent red everywhere (the colour an encoder may keep under alpha 0), an opaque blue square in the middle.
      const cutOut = (side: number) => {
        const px = Buffer.alloc(side * side * 4);
        for (let y = 0; y < side; y++) {
          for (let x = 0; x < side; x++) {
            const inside = Math.abs(x - side / 2) < side / 4 && Math.abs(y - side / 2) < side / 4;
            px.set(inside ? [0, 0, 255, 255] : [255, 0, 0, 0], (y * side + x) * 4);
          }
        }
        return sharp(px, { raw: { width: side, height: side, channels: 4 } }).png().toBuffer();
      };
      fs.writeFileSync(path.join(dir, 'a-64.png'), await cutOut(64));
      fs.writeFileSync(path.join(dir, 'b-200.png'), await cutOut(200));
      for (const size of [64, 32]) {
        const folder = await ImageFolder.open(dir, { size });
        for (let i = 0; i < 2; i++) {
          const px = (await folder.decode(i))!;
          expect([...px.subarray(0, 3)]).toEqual([255, 255, 255]); // a corner: the background
          const centre = ((size / 2) * size + size / 2) * 3;
          expect([...px.subarray(centre, centre + 3)]).toEqual([0, 0, 255]);
        }
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('maxPixels leaves out a larger image undecoded, said so with its size, also read back from a cache built under it', async () => {
    const dir = tmpDir('pirl-data-');
    try {
      const png = (width: number, height: number) => sharp(Buffer.alloc(width * height * 3, 128), { raw: { width, height, channels: 3 } }).png().toBuffer();
      fs.writeFileSync(path.join(dir, 'a-small.png'), await png(10, 10));
      fs.writeFileSync(path.join(dir, 'b-large.png'), await png(30, 20));
      const large = 'a PNG image too large to decode (30×20): more than the limit of 500 pixels (maxPixels, --max-pixels)';
      const cache = path.join(dir, '.images.cache');
      for (const [pass, options] of [{}, { cache }, { cache }].entries()) { // decoded; the cache built; read back
        const warnings: string[] = [], readBack = pass === 2;
        const folder = await ImageFolder.open(dir, { size: 8, maxPixels: 500, onWarning: (m) => warnings.push(m), ...options });
        expect(await folder.decode(0)).not.toBeNull();
        // Decoded, it is skipped when read; a cache leaves it out of the data set.
        if (options.cache) expect([folder.length, folder.leftOut]).toEqual([1, 1]);
        else expect(await folder.decode(1)).toBeNull();
        expect([...folder.failures].map(([f, why]) => [path.basename(f), why])).toEqual([['b-large.png', large]]);
        expect(warnings).toEqual([readBack ? `${dir}: skipping 1 image(s) found unreadable or too large when its decode cache ${cache} was built (b-large.png: ${large})`
          : `skipping image ${path.join(dir, 'b-large.png')}: ${large}`]); // whole and valid: not "unreadable"
        await folder.close();
      }
      // The default (sharp's limit) decodes both; the cache made under 500 is rebuilt, not read as if it held them.
      const whole = await ImageFolder.open(dir, { size: 8, cache, onWarning: () => undefined });
      expect([whole.length, await whole.decode(1) !== null, whole.failures.size, whole.leftOut]).toEqual([2, true, 0, 0]);
      await whole.close();
      const list = await ImageFolder.fromFiles([path.join(dir, 'b-large.png')], { size: 8, maxPixels: 599, onWarning: () => undefined });
      expect(await list.decode(0)).toBeNull();
      expect(await ImageFolder.fromFiles([path.join(dir, 'b-large.png')], { size: 8, maxPixels: 600 }).then((l) => l.decode(0))).not.toBeNull();
      await expect(ImageFolder.open(dir, { maxPixels: 0 })).rejects.toThrow(/^options\.maxPixels must be an integer in \[1, 9007199254740991\], got 0$/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a damaged JPEG that still decodes is kept and said to be damaged, once', async () => {
    const dir = tmpDir('pirl-data-');
    try {
      const gradient = Buffer.alloc(256 * 256 * 3);
      for (let i = 0; i < gradient.length; i++) gradient[i] = (i / 3) % 256;
      const jpeg = await sharp(gradient, { raw: { width: 256, height: 256, channels: 3 } }).jpeg().toBuffer();
      jpeg.fill(0xff, Math.floor(jpeg.length * 0.3), Math.floor(jpeg.length * 0.3) + 200); // corrupt entropy-coded data
      fs.writeFileSync(path.join(dir, 'damaged.jpg'), jpeg);
      const warnings: string[] = [];
      const folder = await ImageFolder.open(dir, { size: 16, onWarning: (m) => warnings.push(m) });
      expect(await folder.decode(0)).not.toBeNull();
      expect(folder.failures.size).toBe(0);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(new RegExp(`^${path.join(dir, 'damaged.jpg')} is damaged \\(decoded, part of it may be missing\\): `));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("hidden files and folders are no images nor classes (macOS's ._x.jpg, .thumbs/); the probe samples the whole folder", async () => {
    const dir = tmpDir('pirl-data-');
    try {
      // 40 files that are no images sort before the 16 images: a probe of the first 32 refused the folder.
      for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(dir, `a-error-page-${String(i).padStart(2, '0')}.jpg`), '<html>404</html>');
      for (let i = 0; i < 16; i++) await raw(20, 20).png().toFile(path.join(dir, `z-${i}.png`));
      for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(dir, `._p${i}.jpg`), Buffer.from([0, 5, 22, 7, 0, 2, 0, 0]));
      fs.mkdirSync(path.join(dir, '.thumbs'));
      await raw(8, 8).png().toFile(path.join(dir, '.thumbs', 'z-0.png'));
      const warnings: string[] = [];
      const folder = await ImageFolder.open(dir, { size: 8, onWarning: (m) => warnings.push(m) });
      expect(folder.length).toBe(56);
      expect(folder.classes).toBeNull();
      expect(folder.files.some((f) => path.basename(f).startsWith('.') || f.includes('.thumbs'))).toBe(false);
      expect(warnings.every((w) => /skipping unreadable image .*a-error-page-\d+\.jpg/.test(w))).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a file or class folder whose name is not UTF-8 (latin1 from a zip) is said to be so, not "no such file"', async () => {
    const dir = tmpDir('pirl-data-');
    try {
      const latin1 = (...parts: Array<string | number>) => Buffer.concat(parts.map((p) => (typeof p === 'number' ? Buffer.from([p]) : Buffer.from(p))));
      await raw(20, 20).png().toFile(path.join(dir, 'a.png'));
      fs.writeFileSync(latin1(dir, '/caf', 0xe9, '.png'), await raw(20, 20).png().toBuffer());
      const warnings: string[] = [];
      const folder = await ImageFolder.open(dir, { size: 8, onWarning: (m) => warnings.push(m) });
      const [name, reason] = [...folder.failures][0];
      expect(path.basename(name)).toBe('caf\uFFFD.png');
      expect(reason).toMatch(/^its name is not valid UTF-8, which pirl cannot open: rename it/);
      fs.mkdirSync(latin1(dir, '/classes/b', 0xe9), { recursive: true });
      fs.mkdirSync(path.join(dir, 'classes', 'a'));
      await raw(20, 20).png().toFile(path.join(dir, 'classes', 'a', 'x.png'));
      await expect(ImageFolder.open(path.join(dir, 'classes'), { size: 8 })).rejects.toThrow(/b\uFFFD: cannot list the folder: its name is not valid UTF-8/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a subfolder this user may not list (a mounted drive's lost+found) is left out, said once: the folder is read", async () => {
    const dir = tmpDir('pirl-data-');
    const locked = path.join(dir, 'lost+found');
    // As root (CI) no folder is refused: readdir refuses this one as it would to another user.
    const readdir = fs.promises.readdir;
    const refuse = jest.spyOn(fs.promises, 'readdir').mockImplementation(((p: fs.PathLike, ...rest: unknown[]) => (String(p) === locked
      ? Promise.reject(Object.assign(new Error(`EACCES: permission denied, scandir '${locked}'`), { code: 'EACCES' }))
      : (readdir as (...args: unknown[]) => Promise<unknown>)(p, ...rest))) as never);
    try {
      for (const name of ['a.png', 'b.png']) await raw(20, 20).png().toFile(path.join(dir, name));
      fs.mkdirSync(locked);
      for (const layout of ['auto', 'flat'] as const) {
        const warnings: string[] = [];
        const folder = await ImageFolder.open(dir, { size: 8, layout, onWarning: (m, code) => warnings.push(`${code} ${m}`) });
        expect({ layout, files: folder.files.map((f) => path.basename(f)) }).toEqual({ layout, files: ['a.png', 'b.png'] });
        expect(warnings).toEqual([`PIRL_IMAGES_LEFT_OUT ${locked}: cannot list the folder: EACCES: permission denied, scandir '${locked}': left out`]);
        await folder.close();
      }
    } finally {
      refuse.mockRestore();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a folder dropped without close() closes its cache file when collected (Node warned of a handle collected open)', async () => {
    const dir = tmpDir('pirl-data-');
    try {
      fs.mkdirSync(path.join(dir, 'images'));
      for (let i = 0; i < 3; i++) await raw(20 + i, 20).png().toFile(path.join(dir, 'images', `${i}.png`));
      const script = `
        const { ImageFolder } = require(${JSON.stringify(path.join(__dirname, '..'))});
        const fs = require('fs');
        const [dir, cache] = ${JSON.stringify([path.join(dir, 'images'), path.join(dir, 'images.cache')])};
        const fds = () => fs.readdirSync('/proc/self/fd').length;
        (async () => {
          await (await ImageFolder.open(dir, { size: 8, cache })).close(); // built
          const before = fds();
          for (let i = 0; i < 3; i++) await ImageFolder.open(dir, { size: 8, cache });
          const open = fds() - before;
          for (let i = 0; i < 5; i++) { global.gc(); await new Promise((r) => setTimeout(r, 20)); }
          console.log(JSON.stringify({ open, after: fds() - before }));
        })();`;
      const r = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' });
      expect({ stderr: r.stderr, out: JSON.parse(r.stdout) }).toEqual({ stderr: '', out: { open: 3, after: 0 } });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the data digest (ranks' agreement, checkpoints): a folder's names relative to it, a subset's at its indices", async () => {
    const dir = tmpDir('pirl-data-');
    try {
      for (const name of ['a.png', 'b.png', 'c.png']) await raw(20, 20).png().toFile(path.join(dir, name));
      const folder = await ImageFolder.open(dir, { size: 8 });
      const digest = dataDigest(folder);
      expect(dataDigest(await ImageFolder.open(path.relative(process.cwd(), dir) + path.sep, { size: 8 }))).toEqual(digest);
      expect(dataDigest(await ImageFolder.fromFiles(['c.png', 'a.png', 'b.png'].map((n) => path.join(dir, n))))).not.toEqual(digest);
      const subset = new Subset(folder, [2, 0]);
      expect(dataDigest(subset)).toEqual(dataDigest(await ImageFolder.fromFiles(['c.png', 'a.png'].map((n) => path.join(dir, n)), { size: 8 })));
      expect(dataDigest(subset).files).not.toBe(digest.files);
      // The samples as stored: a folder's side, an array's shape.
      expect(dataDigest(await ImageFolder.open(dir, { size: 12 }))).toEqual({ ...digest, images: '12×12×3' });
      expect(digest.images).toBe('8×8×3');
      expect(dataDigest(new ArrayDataset(new Uint8Array(12), [1, 2, 2, 3]))).toEqual({ size: 1, labels: 'none', files: 'not a folder', images: '2×2×3', read: null });
      // How the folder was read ('auto' as found), which a resume reads it by: a list of files, or a subset, has none.
      expect([digest.read, dataDigest(subset).read]).toEqual([{ layout: 'flat', recursive: false }, null]);
      expect(dataDigest(await ImageFolder.open(dir, { size: 8, recursive: true })).read).toEqual({ layout: 'flat', recursive: true });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('an empty or unreadable folder is an error before training starts', async () => {
    const empty = tmpDir('pirl-data-');
    await expect(ImageFolder.open(empty)).rejects.toThrow(/no images \(looked for \.jpg/);
    const unreadable = tmpDir('pirl-data-');
    fs.writeFileSync(path.join(unreadable, 'a.jpg'), 'nope');
    await expect(ImageFolder.open(unreadable, { onWarning: () => undefined })).rejects.toThrow(/none of 1 images sampled across the folder could be decoded/);
    // The system's code stays on the error (as a model file's does), and a path through a file is said to be one.
    await expect(ImageFolder.open(path.join(empty, 'missing'))).rejects.toMatchObject({ message: `${path.join(empty, 'missing')}: no such folder`, code: 'ENOENT' });
    await expect(ImageFolder.open(path.join(unreadable, 'a.jpg', 'x'))).rejects.toMatchObject({
      message: `${path.join(unreadable, 'a.jpg', 'x')}: not a folder (a part of its path is a file)`, code: 'ENOTDIR' });
    await expect(ImageFolder.fromFiles([path.join(empty, 'none.png')])).rejects.toMatchObject({ code: 'ENOENT' });
  });

  test('list names the images open would read, decoding none, and says what the layout leaves out', async () => {
    const dir = tmpDir('pirl-data-');
    for (const name of ['b.png', 'a.png']) fs.writeFileSync(path.join(dir, name), 'not an image');
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'x');
    const warnings: string[] = [];
    expect(await ImageFolder.list(dir, { onWarning: (m) => void warnings.push(m) })).toEqual([path.join(dir, 'a.png'), path.join(dir, 'b.png')]);
    expect(warnings).toEqual([expect.stringMatching(/: 1 file\(s\) without an image extension are left out \(notes\.txt;/)]);
    await expect(ImageFolder.open(dir, { onWarning: () => undefined })).rejects.toThrow(/none of 2 images sampled/); // what list does not do
  });

  test('decode refuses an index outside the folder instead of answering null', async () => {
    const dir = tmpDir('pirl-data-');
    await raw(20, 20).png().toFile(path.join(dir, 'a.png'));
    const folder = await ImageFolder.open(dir, { size: 8 });
    await expect(folder.decode(-1)).rejects.toThrow(/index must be an integer in \[0, 0\], got -1/);
    await expect(folder.decode(1e9)).rejects.toThrow(RangeError);
    expect((await folder.decode(0))!.length).toBe(8 * 8 * 3);
  });

  test('a cache gives what decoding gives: the same pixels, the same images found unreadable and why, said once as a whole when read back — and leaves those out of the data set', async () => {
    const dir = tmpDir('pirl-data-');
    try {
      const names = await writeAllKinds(dir);
      fs.writeFileSync(path.join(dir, 'c-broken.png'), 'not a png');
      // Why only its decoder says (its bytes look whole): read back, it was "cannot be decoded (truncated or corrupt)" alone.
      const huffman = Buffer.from(await raw(32, 32).jpeg().toBuffer());
      huffman.fill(0xff, huffman.indexOf(Buffer.from([0xff, 0xc4])) + 5, huffman.indexOf(Buffer.from([0xff, 0xc4])) + 21); // its codes' counts
      fs.writeFileSync(path.join(dir, 'c-huffman.jpg'), huffman);
      const all = [...names, 'c-broken.png', 'c-huffman.jpg'].map((_, i) => i);
      const warned: string[] = [];
      const plain = await ImageFolder.open(dir, { size: 16, onWarning: () => undefined });
      const expected = await plain.batchSource(all);
      const readable = plain.files.filter((f) => !plain.failures.has(f));
      const cache = path.join(dir, '.images.cache');
      for (const pass of ['built', 'read back']) {
        const cached = await ImageFolder.open(dir, { size: 16, cache, onWarning: (m) => warned.push(m) });
        // Left out of the data set, not of the batches: its samples are the readable images, each batch full.
        expect({ pass, files: cached.files, length: cached.length, leftOut: cached.leftOut }).toEqual({ pass, files: readable, length: all.length - 2, leftOut: 2 });
        const got = await cached.batchSource(readable.map((_, i) => i));
        expect(got.indices).toEqual(readable.map((_, i) => i));
        const images = (b: BatchSource) => Buffer.concat([...(b.rows.data() as BigInt64Array)].map((r) => Buffer.from(b.source.rows(Number(r), 1).data() as Uint8Array)));
        expect([got.rows.shape, images(got).equals(images(expected))]).toEqual([[all.length - 2], true]);
        expect([...cached.failures]).toEqual([...plain.failures]); // the reason too, read back or not
        expect([...cached.failures.keys()].map((f) => path.basename(f))).toEqual(['c-broken.png', 'c-huffman.jpg']);
        await cached.close();
      }
      expect(plain.failures.get(path.join(dir, 'c-huffman.jpg'))).toMatch(/: .*VipsJpeg: Bogus Huffman table definition$/);
      // Said when built, each as found; read back, once (no run goes without hearing of them, nor hears of each every time).
      const why = (f: string) => `${f}: ${plain.failures.get(path.join(dir, f))}`;
      expect(warned).toEqual([...['c-broken.png', 'c-huffman.jpg'].map((f) => `skipping unreadable image ${path.join(dir, f)}: ${plain.failures.get(path.join(dir, f))}`),
        `${dir}: skipping 2 image(s) found unreadable or too large when its decode cache ${cache} was built (${why('c-broken.png')}; ${why('c-huffman.jpg')})`]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('class folders through a cache: the labels of the readable images, every batch of a Loader full', async () => {
    const dir = tmpDir('pirl-data-');
    try {
      for (const c of ['cats', 'dogs']) fs.mkdirSync(path.join(dir, c));
      for (let i = 0; i < 4; i++) {
        fs.writeFileSync(path.join(dir, 'cats', `${i}.png`), await raw(20, 20).png().toBuffer());
        fs.writeFileSync(path.join(dir, 'dogs', `${i}.png`), await raw(20, 20).png().toBuffer());
      }
      fs.writeFileSync(path.join(dir, 'cats', '9-broken.jpg'), 'not a jpeg');
      fs.writeFileSync(path.join(dir, 'dogs', '9-empty.png'), '');
      const plain = await ImageFolder.open(dir, { size: 16, onWarning: () => undefined });
      const folder = await ImageFolder.open(dir, { size: 16, cache: path.join(os.tmpdir(), `pirl-classes-${process.pid}.cache`), onWarning: () => undefined });
      try {
        expect([plain.length, folder.length, folder.leftOut, folder.classes]).toEqual([10, 8, 2, ['cats', 'dogs']]);
        expect([...folder.labels!]).toEqual([0, 0, 0, 0, 1, 1, 1, 1]);
        expect(folder.files.map((f) => path.relative(dir, f))).toEqual([...[0, 1, 2, 3].map((i) => `cats/${i}.png`), ...[0, 1, 2, 3].map((i) => `dogs/${i}.png`)]);
        // Through the cache no batch holds an unreadable image to lose: each is full.
        const sizes: number[] = [];
        for await (const b of new Loader(folder, { batchSize: 4, config: { imageSize: 8, jigsawSize: 9, patchSize: 3 } }).epoch(0)) sizes.push(b.indices.shape[0]);
        expect(sizes).toEqual([4, 4]);
      } finally {
        await folder.close();
        fs.rmSync(path.join(os.tmpdir(), `pirl-classes-${process.pid}.cache`), { force: true });
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a cache's rebuild decodes only the changed, added and unreadable images: the file equals a fresh build's, byte for byte; under another maxPixels it decodes all", async () => {
    const dir = tmpDir('pirl-data-');
    for (let i = 0; i < 12; i++) await raw(20 + i, 24).png().toFile(path.join(dir, `${String(i).padStart(2, '0')}.png`));
    fs.writeFileSync(path.join(dir, '05.png'), 'not an image');
    const caches = tmpDir('pirl-data-');
    const cache = path.join(caches, 'images.cache'), fresh = path.join(caches, 'fresh.cache');
    const decodedBy = async (file: string, options: { maxPixels?: number } = {}) => {
      const warnings: string[] = [];
      await (await ImageFolder.open(dir, { size: 8, cache: file, ...options, onWarning: (m, code) => void (code === 'PIRL_CACHE_REBUILT' && warnings.push(m)) })).close();
      return { warnings };
    };
    await decodedBy(cache);
    // Changed (rewritten), removed, added, and left as they were.
    await new Promise((r) => setTimeout(r, 20));
    await raw(40, 24).negate().png().toFile(path.join(dir, '03.png'));
    fs.rmSync(path.join(dir, '07.png'));
    await raw(26, 26).png().toFile(path.join(dir, '04b.png'));
    const spy = jest.spyOn(ImageFolder.prototype as unknown as { decodeNow: (input: unknown) => Promise<Buffer> }, 'decodeNow');
    try {
      const { warnings } = await decodedBy(cache);
      const decoded = () => [...new Set(spy.mock.calls.map(([input]) => path.basename(String(input))))].sort();
      expect(decoded()).toEqual(['03.png', '04b.png', '05.png']); // 05.png, unreadable, is decoded again to say why
      expect(warnings).toEqual([`the decode cache ${cache} was built before files of ${dir} were added, removed or changed (name, size, modification time): ` +
        "rebuilding it, 3 of 12 images decoded again (the unchanged ones' pixels kept)"]);
      spy.mockClear();
      await decodedBy(fresh);
      expect(decoded()).toHaveLength(12);
      expect(fs.readFileSync(cache).equals(fs.readFileSync(fresh))).toBe(true);
      // Under another limit an image kept would be one the limit leaves out: all decoded again.
      spy.mockClear();
      expect((await decodedBy(cache, { maxPixels: 100_000 })).warnings).toEqual([`the decode cache ${cache} was built under another maxPixels: rebuilding it, every image decoded again`]);
      expect(decoded()).toHaveLength(12);
      // One of an earlier pirl (no version, no index, no reasons, the header alone: as it reads them) is read as it is, its
      // image left out said from what the file holds, and rebuilt whole.
      const bytes = fs.readFileSync(fresh), length = Number(bytes.readBigUInt64LE(0));
      const { version, maxPixels, index, leftOut, ...older } = JSON.parse(bytes.subarray(8, 8 + length).toString());
      expect([version, maxPixels, index > 0, bytes.subarray(bytes.length - leftOut).toString()]).toEqual([2, 268402689, true, '[6,"not an image: text starting \\"not an image\\""]\n']);
      const header = Buffer.from(JSON.stringify(older)), head = Buffer.alloc(8);
      head.writeBigUInt64LE(BigInt(header.length));
      fs.writeFileSync(fresh, Buffer.concat([head, header, bytes.subarray(8 + length, bytes.length - index - leftOut)]));
      const told: string[] = [];
      const unchanged = await ImageFolder.open(dir, { size: 8, cache: fresh, onWarning: (m) => told.push(m) });
      expect([unchanged.length, told]).toEqual([11, [`${dir}: skipping 1 image(s) found unreadable or too large when its decode cache ${fresh} was built (05.png: not an image: text starting "not an image")`]]);
      await unchanged.close();
      spy.mockClear();
      await new Promise((r) => setTimeout(r, 20));
      await raw(40, 24).png().toFile(path.join(dir, '03.png'));
      expect((await decodedBy(fresh)).warnings).toEqual([`the decode cache ${fresh} was built by another version of pirl: rebuilding it, every image decoded again`]);
      expect(decoded()).toHaveLength(12);
    } finally {
      spy.mockRestore();
      fs.rmSync(dir, { recursive: true, force: true });
      fs.rmSync(caches, { recursive: true, force: true });
    }
  });

  test('the cache decodes once, is rebuilt when a file changes, and refused at another size', async () => {
    const dir = tmpDir('pirl-data-');
    await writeAllKinds(dir);
    const cache = path.join(tmpDir('pirl-data-'), 'images.cache');
    const first = await ImageFolder.open(dir, { size: 16, cache });
    const a = (await first.batchSource([0, 1, 2])).source.data().slice();
    await first.close();
    const built = fs.statSync(cache).mtimeMs;
    // A rebuild is said (it decodes every image again, as the first build), and its progress runs from 0.
    const rebuilds: string[] = [], progress: number[] = [];
    const told = { onWarning: (m: string, code: string) => void (code === 'PIRL_CACHE_REBUILT' && rebuilds.push(m)), onCacheProgress: (done: number) => void progress.push(done) };
    const second = await ImageFolder.open(dir, { size: 16, cache, ...told });
    expect(fs.statSync(cache).mtimeMs).toBe(built); // reused
    expect([rebuilds, progress]).toEqual([[], []]);
    expect([...(await second.batchSource([0, 1, 2])).source.data()]).toEqual([...a]);
    await second.close();
    await new Promise((r) => setTimeout(r, 20));
    await raw(50, 40).negate().jpeg().toFile(path.join(dir, 'a.jpg')); // content changes
    const third = await ImageFolder.open(dir, { size: 16, cache, ...told });
    expect(fs.statSync(cache).mtimeMs).not.toBe(built);
    // Only the changed image and the unreadable ones are decoded again: the others' pixels are the earlier cache's.
    const total = third.length + third.leftOut;
    expect(rebuilds).toEqual([`the decode cache ${cache} was built before files of ${dir} were added, removed or changed (name, size, modification time): ` +
      `rebuilding it, ${1 + third.leftOut} of ${total} images decoded again (the unchanged ones' pixels kept)`]);
    expect([progress[0], progress[progress.length - 1]]).toEqual([0, total]);
    expect([...(await third.batchSource([0])).source.data()]).not.toEqual([...a.subarray(0, 16 * 16 * 3)]);
    await third.close();
    // One cut short (a disk that filled up under an earlier pirl) is said as such.
    fs.truncateSync(cache, fs.statSync(cache).size - 1);
    rebuilds.length = 0;
    await (await ImageFolder.open(dir, { size: 16, cache, ...told })).close();
    expect(rebuilds).toEqual([`the decode cache ${cache} is not as long as its header says (cut short?): rebuilding it, every image decoded again`]);
    // Another size's cache (another run's, or pirl embed's next to pirl train's) is refused, not rebuilt under it.
    const before = fs.readFileSync(cache);
    await expect(ImageFolder.open(dir, { size: 8, cache })).rejects.toThrow(
      `${cache} caches images at 16 px; this folder is read at 8 px: give another cache file (or remove ${cache} to rebuild it at 8 px)`);
    expect(fs.readFileSync(cache).equals(before)).toBe(true);
    // Another folder's cache is refused too (it was rebuilt for the other folder, then back, in silence) …
    const other = tmpDir('pirl-data-');
    await raw(30, 30).png().toFile(path.join(other, 'x.png'));
    await expect(ImageFolder.open(other, { size: 16, cache })).rejects.toThrow(
      `${cache} caches the images of another folder, ${path.resolve(dir)}: give another cache file (or remove ${cache} to cache ${path.resolve(other)} in it)`);
    expect(fs.readFileSync(cache).equals(before)).toBe(true);
    // The same folder named otherwise (relative, with a trailing slash) is the same folder: rebuilt when its files change, as ever.
    await new Promise((r) => setTimeout(r, 20));
    await raw(50, 40).jpeg().toFile(path.join(dir, 'a.jpg'));
    await (await ImageFolder.open(`${path.relative(process.cwd(), dir)}/`, { size: 16, cache })).close();
    expect(fs.readFileSync(cache).equals(before)).toBe(false);
    const rebuilt = fs.readFileSync(cache);
    // … but the same images moved elsewhere read it as theirs.
    const moved = `${dir}-moved`;
    fs.renameSync(dir, moved);
    const movedFolder = await ImageFolder.open(moved, { size: 16, cache });
    expect(fs.readFileSync(cache).equals(rebuilt)).toBe(true);
    await movedFolder.close();
    fs.rmSync(cache);
    const resized = await ImageFolder.open(moved, { size: 8, cache });
    expect((await resized.batchSource([0])).source.shape).toEqual([1, 8, 8, 3]);
    await resized.close();
  });

  test('a cache file that is not a pirl decode cache (a checkpoint named by mistake, an image) is refused and left as it was; an empty one is built', async () => {
    const dir = tmpDir('pirl-data-');
    await writeAllKinds(dir);
    const where = tmpDir('pirl-cache-');
    const checkpoint = path.join(where, 'checkpoint.safetensors');
    fs.writeFileSync(checkpoint, serializeSafetensors([['w', Tensor.from(new Float32Array([1, 2]))]], { pirl: '{}' }));
    const image = path.join(where, 'photo.png');
    await raw(20, 20).png().toFile(image);
    const tiny = path.join(where, 'tiny');
    fs.writeFileSync(tiny, 'abc');
    for (const file of [checkpoint, image, tiny]) {
      const before = fs.readFileSync(file);
      await expect(ImageFolder.open(dir, { size: 8, cache: file, onWarning: () => undefined })).rejects.toThrow(
        /^options\.cache must be a new file or a pirl decode cache, not a file that holds something else \(pirl does not overwrite it\), got "\/tmp\//);
      expect(fs.readFileSync(file).equals(before)).toBe(true);
    }
    const empty = path.join(where, 'empty.cache');
    fs.writeFileSync(empty, '');
    await (await ImageFolder.open(dir, { size: 8, cache: empty, onWarning: () => undefined })).close();
    expect(fs.statSync(empty).size).toBeGreaterThan(0);
  });

  test('a misspelt option is an error naming the options there are, not ignored', async () => {
    const dir = tmpDir('pirl-data-');
    await raw(20, 20).png().toFile(path.join(dir, 'a.png'));
    await expect(ImageFolder.open(dir, { sizes: 32 } as never)).rejects.toThrow(/^options\.sizes is not an option; options takes size, layout, recursive, cache, maxPixels, onCacheProgress, onWarning \(did you mean size\?\)$/);
    await expect(ImageFolder.open(dir, 'big' as never)).rejects.toThrow(/options must be an object, got "big"/);
    await expect(ImageFolder.open(dir, { onWarning: 'log' as never })).rejects.toThrow(/options\.onWarning must be a function, got "log"/);
    await expect(ImageFolder.open(dir, { cache: 3 as never })).rejects.toThrow(/options\.cache must be a file path, got 3/);
  });

  test('the cache: its folder is made, a folder in its place is refused, and no temporary file outlives a failure', async () => {
    const dir = tmpDir('pirl-data-');
    await raw(20, 20).png().toFile(path.join(dir, 'a.png'));
    fs.writeFileSync(path.join(dir, 'b.png'), 'not an image');
    const where = tmpDir('pirl-cache-');
    const nested = path.join(where, 'not', 'yet', 'images.cache');
    const folder = await ImageFolder.open(dir, { size: 8, cache: nested, onWarning: () => undefined });
    await folder.close();
    expect(fs.statSync(nested).isFile()).toBe(true);
    // A folder is refused before anything is decoded (it failed at the rename, leaving every image decoded in a .tmp).
    const taken = path.join(where, 'taken');
    fs.mkdirSync(taken);
    await expect(ImageFolder.open(dir, { size: 8, cache: taken })).rejects.toThrow(`options.cache must be a file, not a folder, got ${JSON.stringify(taken)}`);
    await expect(ImageFolder.open(dir, { size: 8, cache: path.join(where, 'new') + path.sep })).rejects.toThrow(/options\.cache must be a file, not a folder/);
    // A build that fails midway (here the warning callback throws) keeps what it wrote for the next, and nothing else.
    const failing = path.join(where, 'failing.cache');
    await expect(ImageFolder.open(dir, { size: 8, cache: failing, onWarning: () => { throw new Error('stop here'); } })).rejects.toThrow('stop here');
    expect(fs.readdirSync(where).sort()).toEqual(['failing.cache.partial', 'not', 'taken']);
  });

  test('a build of the cache interrupted (an error, kill -9) continues where it stopped: only the images it had not written are decoded, and the cache equals a fresh build', async () => {
    const dir = tmpDir('pirl-data-'), where = tmpDir('pirl-cache-');
    const spy = jest.spyOn(ImageFolder.prototype as unknown as { decodeNow: (input: unknown) => Promise<Buffer> }, 'decodeNow');
    try {
      for (let i = 0; i < 150; i++) await raw(20 + (i % 7), 20).png().toFile(path.join(dir, `${String(i).padStart(3, '0')}.png`)); // 3 parts of 64
      fs.writeFileSync(path.join(dir, '100.png'), 'not an image');
      const [cache, fresh] = [path.join(where, 'images.cache'), path.join(where, 'fresh.cache')];
      await (await ImageFolder.open(dir, { size: 8, cache: fresh, onWarning: () => undefined })).close();
      const continued = async () => {
        spy.mockClear();
        const warnings: string[] = [], progress: number[][] = [];
        await (await ImageFolder.open(dir, { size: 8, cache, onWarning: (m, code) => void (code === 'PIRL_CACHE_REBUILT' && warnings.push(m)), onCacheProgress: (d, t) => void progress.push([d, t]) })).close();
        const decoded = [...new Set(spy.mock.calls.map(([input]) => path.basename(String(input))))]; // an unreadable one is tried twice
        expect([fs.readFileSync(cache).equals(fs.readFileSync(fresh)), fs.existsSync(`${cache}.partial`)]).toEqual([true, false]);
        return { warnings, progress, decoded };
      };
      // An error after the first part: its images are kept.
      await expect(ImageFolder.open(dir, { size: 8, cache, onWarning: () => undefined, onCacheProgress: (d) => { if (d >= 64) throw new Error('stop'); } })).rejects.toThrow('stop');
      const again = await continued();
      expect(again.warnings).toEqual([`continuing the build of the decode cache ${cache} that was interrupted (${cache}.partial): 64 of 150 images written before`]);
      expect([again.decoded.length, again.decoded.every((f) => f >= '064'), again.progress[0], again.progress.at(-1)]).toEqual([86, true, [0, 86], [86, 86]]);
      // A process killed after two parts, a few seconds apart (their validity bytes were written once the pixels were synced).
      fs.rmSync(cache);
      const script = `const { ImageFolder } = require('./dist'); const t0 = Date.now();
        ImageFolder.open(${JSON.stringify(dir)}, { size: 8, cache: ${JSON.stringify(cache)}, onWarning: () => undefined, onCacheProgress: (d) => {
          if (d === 64) while (Date.now() - t0 < 2500); if (d >= 128) process.kill(process.pid, 'SIGKILL'); } });`;
      expect(spawnSync(process.execPath, ['-e', script], { cwd: path.join(__dirname, '..') }).signal).toBe('SIGKILL');
      const killed = await continued();
      expect([killed.warnings[0].endsWith(': 127 of 150 images written before'), killed.decoded.length]).toEqual([true, 23]); // 100.png, unreadable, tried again
      // Another folder's, or this one's changed since, is not continued: removed, the build starts over.
      fs.copyFileSync(fresh, `${cache}.partial`);
      await new Promise((r) => setTimeout(r, 20));
      await raw(30, 30).png().toFile(path.join(dir, '000.png'));
      fs.rmSync(cache);
      await (await ImageFolder.open(dir, { size: 8, cache: fresh, onWarning: () => undefined })).close();
      expect((await continued()).decoded).toHaveLength(150);
      // Another folder's (a --cache shared by two runs) is refused, and kept.
      const other = tmpDir('pirl-data-'), otherCache = path.join(where, 'other.cache');
      await raw(20, 20).png().toFile(path.join(other, 'a.png'));
      fs.copyFileSync(fresh, `${otherCache}.partial`);
      await expect(ImageFolder.open(other, { size: 8, cache: otherCache })).rejects.toThrow(
        `${otherCache}.partial is the interrupted build of the cache of another folder, ${path.resolve(dir)}: give another cache file (or remove ${otherCache}.partial)`);
      expect(fs.existsSync(`${otherCache}.partial`)).toBe(true);
      fs.rmSync(other, { recursive: true, force: true });
    } finally {
      spy.mockRestore();
      fs.rmSync(dir, { recursive: true, force: true });
      fs.rmSync(where, { recursive: true, force: true });
    }
  });

  test('a cache that is a FIFO is refused before any work (its open waited for a writer forever)', async () => {
    const dir = tmpDir('pirl-data-');
    await raw(20, 20).png().toFile(path.join(dir, 'a.png'));
    const where = tmpDir('pirl-cache-');
    const fifo = path.join(where, 'images.cache');
    execFileSync('mkfifo', [fifo]);
    await expect(ImageFolder.open(dir, { size: 8, cache: fifo })).rejects.toThrow(`options.cache must be a regular file or a new path, got ${JSON.stringify(fifo)}`);
    expect(fs.statSync(fifo).isFIFO()).toBe(true);
    expect(fs.readdirSync(where)).toEqual(['images.cache']); // no lock, no temporary
  }, 10_000);

  test('a cache that is a device is refused before any work (/dev/null was an empty cache, and as root the build renamed its copy over it)', async () => {
    const before = fs.statSync('/dev/null');
    // First with a folder that does not exist: refused there, the cache is checked before anything is read or
    // written; without that check this stops at the missing folder, and nothing near /dev/null is touched.
    await expect(ImageFolder.open(path.join(tmpDir('pirl-data-'), 'missing'), { size: 8, cache: '/dev/null' })).rejects.toThrow(
      'options.cache must be a regular file or a new path, got "/dev/null"');
    const dir = tmpDir('pirl-data-');
    await raw(20, 20).png().toFile(path.join(dir, 'a.png'));
    await expect(ImageFolder.open(dir, { size: 8, cache: '/dev/null' })).rejects.toThrow('options.cache must be a regular file or a new path, got "/dev/null"');
    const after = fs.statSync('/dev/null');
    expect([after.isCharacterDevice(), after.ino, after.rdev]).toEqual([true, before.ino, before.rdev]);
    expect(fs.existsSync('/dev/null.lock')).toBe(false);
  });

  test('openers of one cache at once (the ranks of a run) build it once; a lock and a temporary left by a builder that died are taken over', async () => {
    const dir = tmpDir('pirl-data-');
    for (let i = 0; i < 6; i++) await raw(20, 20).png().toFile(path.join(dir, `${i}.png`));
    const cache = path.join(tmpDir('pirl-cache-'), 'images.cache');
    const built = [0, 0, 0];
    const folders = await Promise.all(built.map((_, k) => ImageFolder.open(dir, { size: 8, cache, onCacheProgress: () => void built[k]++ })));
    expect(built.filter((n) => n > 0)).toHaveLength(1);
    const sources = await Promise.all(folders.map((f) => f.batchSource([0, 5])));
    for (const s of sources) expect(Buffer.from(s.source.data() as Uint8Array).equals(Buffer.from(sources[0].source.data() as Uint8Array))).toBe(true);
    await Promise.all(folders.map((f) => f.close()));
    fs.rmSync(cache);
    fs.writeFileSync(`${cache}.lock`, `${os.hostname()} 4194305`); // above Linux's largest pid: no such process
    fs.writeFileSync(path.join(path.dirname(cache), '.images.cache.4194305.tmp'), 'half a cache: its builder was killed');
    let rebuilt = 0;
    await (await ImageFolder.open(dir, { size: 8, cache, onCacheProgress: () => void rebuilt++ })).close();
    expect(rebuilt).toBeGreaterThan(0);
    expect(fs.readdirSync(path.dirname(cache))).toEqual(['images.cache']);
    // Also dead: another host's builder whose lock nobody touched for over a minute, and one naming this pid
    // that this process does not hold (a restarted container's pids repeat).
    for (const [token, age] of [['otherhost 1234 ab', 120], [`${os.hostname()} ${process.pid} cd`, 0]] as const) {
      fs.rmSync(cache);
      fs.writeFileSync(`${cache}.lock`, token);
      const then = new Date(Date.now() - age * 1000);
      fs.utimesSync(`${cache}.lock`, then, then);
      let again = 0;
      await (await ImageFolder.open(dir, { size: 8, cache, onCacheProgress: () => void again++ })).close();
      expect({ token, again: again > 0 }).toEqual({ token, again: true });
      expect(fs.readdirSync(path.dirname(cache))).toEqual(['images.cache']);
    }
  });

  test("Worker threads opening one cache at once build it once; a Worker terminated mid-build leaves nothing its process's next opener waits on", async () => {
    // The lock named the pid alone: each Worker took another's live lock for a dead holder's, and every one decoded the folder.
    const dir = tmpDir('pirl-data-');
    await Promise.all(Array.from({ length: 192 }, (_, i) => raw(32, 32).png().toFile(path.join(dir, `${i}.png`))));
    const cache = path.join(tmpDir('pirl-cache-'), 'images.cache');
    const opener = `
      const { parentPort, workerData } = require('worker_threads');
      const { ImageFolder } = require(${JSON.stringify(path.join(__dirname, '..'))});
      parentPort.once('message', async () => {
        let built = false;
        const onCacheProgress = () => { built = true; if (workerData.tell) parentPort.postMessage('building'); };
        await (await ImageFolder.open(${JSON.stringify(dir)}, { size: 8, cache: ${JSON.stringify(cache)}, onCacheProgress })).close();
        parentPort.postMessage({ built });
      });
      parentPort.postMessage('ready');`;
    const script = `
      const { Worker } = require('worker_threads');
      const fs = require('fs');
      const { ImageFolder } = require(${JSON.stringify(path.join(__dirname, '..'))});
      const start = (tell) => new Promise((resolve) => {
        const worker = new Worker(${JSON.stringify(opener)}, { eval: true, workerData: { tell } });
        worker.once('message', () => resolve(worker)); // loaded: ready
      });
      const answer = (worker) => new Promise((resolve) => worker.once('message', resolve));
      (async () => {
        const workers = await Promise.all([0, 1, 2].map(() => start(false)));
        const answers = workers.map(answer);
        workers.forEach((w) => w.postMessage('go'));
        const builders = (await Promise.all(answers)).filter((a) => a.built).length;
        await Promise.all(workers.map((w) => w.terminate()));
        fs.rmSync(${JSON.stringify(cache)});
        const doomed = await start(true);
        const building = answer(doomed);
        doomed.postMessage('go');
        await building;
        await doomed.terminate();
        const left = fs.readdirSync(${JSON.stringify(path.dirname(cache))}).length;
        let rebuilt = false;
        const t0 = Date.now();
        await (await ImageFolder.open(${JSON.stringify(dir)}, { size: 8, cache: ${JSON.stringify(cache)}, onCacheProgress: () => { rebuilt = true; } })).close();
        console.log(JSON.stringify({ builders, left, rebuilt, waited: Date.now() - t0 < 10000, after: fs.readdirSync(${JSON.stringify(path.dirname(cache))}) }));
      })();`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 120_000 });
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    // The terminated builder left its lock and its temporary (2 files): taken over and removed within seconds, not a minute.
    expect(JSON.parse(r.stdout)).toEqual({ builders: 1, left: 2, rebuilt: true, waited: true, after: ['images.cache'] });
  });

  test('symbolic links to images and to class folders are followed; a link to nothing is skipped as unreadable', async () => {
    const elsewhere = tmpDir('pirl-elsewhere-');
    await raw(20, 20).png().toFile(path.join(elsewhere, 'outside.png'));
    const flat = tmpDir('pirl-data-');
    await raw(20, 20).png().toFile(path.join(flat, 'a.png'));
    fs.symlinkSync(path.join(elsewhere, 'outside.png'), path.join(flat, 'b.png'));
    fs.symlinkSync(path.join(elsewhere, 'gone.png'), path.join(flat, 'c.png'));
    for (const cache of [undefined, path.join(tmpDir('pirl-cache-'), 'images.cache')]) {
      const warnings: string[] = [];
      const folder = await ImageFolder.open(flat, { size: 8, cache, onWarning: (m) => warnings.push(m) });
      // Skipped when read; a cache leaves it out of the data set.
      if (cache) {
        expect([folder.files.map((f) => path.basename(f)), folder.leftOut]).toEqual([['a.png', 'b.png'], 1]);
        expect((await folder.batchSource([0, 1])).indices).toEqual([0, 1]);
      } else {
        expect(folder.files.map((f) => path.basename(f))).toEqual(['a.png', 'b.png', 'c.png']);
        expect((await folder.batchSource([0, 1, 2])).indices).toEqual([0, 1]);
      }
      expect([...folder.failures.keys()]).toEqual([path.join(flat, 'c.png')]);
      expect(warnings).toEqual([expect.stringMatching(/^skipping unreadable image .*c\.png: ENOENT/)]);
      await folder.close();
    }
    // A class folder that is a link, and a link in a class folder to itself: no images left out, and the count of nested ones ends.
    const labeled = tmpDir('pirl-data-');
    fs.mkdirSync(path.join(labeled, 'dogs'));
    await raw(20, 20).png().toFile(path.join(labeled, 'dogs', 'd.png'));
    fs.symlinkSync(elsewhere, path.join(labeled, 'cats'));
    fs.symlinkSync('.', path.join(labeled, 'dogs', 'again'));
    fs.symlinkSync('..', path.join(labeled, 'dogs', 'up')); // back to the root: its classes are read, not left out
    fs.mkdirSync(path.join(labeled, 'dogs', 'puppies'));
    await raw(20, 20).png().toFile(path.join(labeled, 'dogs', 'puppies', 'p.png'));
    // A link out of the folder is not walked for the count (`ln -s / photos/root` walked the whole file system).
    const outsideTree = tmpDir('pirl-data-');
    fs.mkdirSync(path.join(outsideTree, 'deep'));
    await raw(20, 20).png().toFile(path.join(outsideTree, 'deep', 'o.png'));
    fs.symlinkSync(outsideTree, path.join(labeled, 'dogs', 'out'));
    const warnings: string[] = [];
    const folder = await ImageFolder.open(labeled, { size: 8, onWarning: (m) => warnings.push(m) });
    expect(folder.classes).toEqual(['cats', 'dogs']);
    expect(folder.files.map((f) => path.relative(labeled, f))).toEqual([path.join('cats', 'outside.png'), path.join('dogs', 'd.png')]);
    expect(warnings).toEqual([`${labeled}: 1 image(s) in subfolders of class folders are left out (${path.join('dogs', 'puppies')}; a class is its folder's own images: recursive (--recursive) reads those below too)`]);
  });
});
