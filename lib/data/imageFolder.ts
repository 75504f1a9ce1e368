// A folder of images decoded with sharp: flat (unlabeled) or one subfolder per class (labeled).
// Every image becomes size×size 8-bit RGB (EXIF orientation applied, transparency composited on white, CMYK,
// gray and 16-bit converted); unreadable files are skipped with one warning each and listed in `failures`.
import { createHash } from 'crypto';
import { promises as fs, type Dirent, type Stats } from 'fs';
import * as path from 'path';
import { StringDecoder } from 'string_decoder';

import sharp from 'sharp';

import { DEFAULT_PRESET, MAX_IMAGE_SIDE, PRESETS, folderImageSize } from '../config';
import { checkBoolean, checkFile, checkFunctions, checkInteger, checkOneOf, checkOptions, errorFrom, isArgumentError, isDetached, rangeError, typeError } from '../errors';
import { describeStart, openRegular, realPathOf } from '../folders';
import { takeLock, unwritable } from '../lockFile';
import { makeFolderFor, removeStaleTemporaries, syncFolder } from '../safetensors';
import { Tensor, int64Tensor } from '../tensor';
import { LISTED_PLACES, Subset, checkIndices, type BatchSource, type Dataset } from './datasets';

/**
 * A file as it was when read: its size, modification time and change time (ctime: a rewrite that puts the
 * modification time back changes it), which tell that it changed since.
 */
export interface FileVersion {
  bytes: number;
  modifiedMs: number;
  changedMs: number;
}

/** A FileVersion's fields: all the same, the file is taken as unchanged. */
export const VERSION_FIELDS = ['bytes', 'modifiedMs', 'changedMs'] as const;

export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.webp', '.gif', '.tif', '.tiff', '.avif'];
const CACHE_VERSION = 2; // 2: transparency composited on white (1 dropped alpha, by size: black or the hidden colour), validity bytes together

/** 'flat': the folder's own images, unlabeled; 'classes': one class per subfolder; 'auto': whichever the folder holds. */
export const FOLDER_LAYOUTS = ['auto', 'flat', 'classes'] as const;
export type FolderLayout = (typeof FOLDER_LAYOUTS)[number];
export const DEFAULT_LAYOUT: FolderLayout = 'auto';

/** How ImageFolder.open read a folder: its layout as found ('auto' resolved) and whether it read below the subfolders. */
export interface FolderRead {
  layout: Exclude<FolderLayout, 'auto'>;
  recursive: boolean;
}

/**
 * A folder with images of its own and subfolders of images, opened with layout 'auto': which of them is
 * the data set is the user's to say (before, the subfolders won and a flat folder with one stray
 * subfolder trained on that subfolder alone).
 */
export class AmbiguousLayoutError extends Error {
  readonly code = 'PIRL_AMBIGUOUS_LAYOUT';

  constructor(readonly dir: string, readonly ownImages: number, readonly classFolders: readonly string[], readonly recursive = false) {
    super('');
    this.message = this.explain('options.layout');
  }

  /** The message, naming the option (or flag) that settles it. */
  explain(option: string): string {
    const shown = this.classFolders.slice(0, 3).join(', ') + (this.classFolders.length > 3 ? ', …' : '');
    return `${this.dir} holds ${this.ownImages} image(s) of its own and ${this.classFolders.length} subfolder(s) of images (${shown}): ` +
      `say which is the data set with ${option} 'flat' (${this.recursive ? 'its images and those below' : 'its own images'}, unlabeled) or 'classes' (one class per subfolder)`;
  }
}

export interface ImageFolderOptions {
  /** Side of the stored square images (default 64); crops are taken from these. */
  size?: number;
  /** Which images the folder's data set is (default 'auto'; see FOLDER_LAYOUTS). */
  layout?: FolderLayout;
  /**
   * Images in subfolders at any depth are read too (default false: a class is its folder's own images, a flat folder
   * its own; those below are left out, said): a class is every image below its folder, as in torchvision's
   * ImageFolder (a catalogue's shoes/2019/*.jpg are shoes), a flat folder every image below it.
   */
  recursive?: boolean;
  /** A file that keeps the decoded images, so later epochs and runs do not decode again. */
  cache?: string;
  /**
   * An image of more pixels is left out (warned of) before it is decoded (default 268,402,689: sharp's limit). A
   * service taking uploads wants less: a 745 KB PNG of 16,000² px below the default costs ~1 GB and seconds.
   */
  maxPixels?: number;
  /** Called as the cache is built (first, or again: the images added, changed or unreadable decoded), with images done of all, from 0 (a build continued: of those it had left). */
  onCacheProgress?: (done: number, total: number) => void;
  /**
   * Called once per unreadable or damaged file, for what the layout leaves out, while another process builds the
   * cache, and when a stale cache is rebuilt (default: process.emitWarning, codes PIRL_UNREADABLE_IMAGE,
   * PIRL_DAMAGED_IMAGE, PIRL_IMAGES_LEFT_OUT, PIRL_CACHE_WAIT, PIRL_CACHE_REBUILT); it is told the code too.
   */
  onWarning?: (message: string, code: FolderWarning) => void;
}

const IMAGE_FOLDER_OPTIONS = ['size', 'layout', 'recursive', 'cache', 'maxPixels', 'onCacheProgress', 'onWarning'] as const satisfies ReadonlyArray<keyof ImageFolderOptions>;

const isImage = (name: string) => IMAGE_EXTENSIONS.includes(path.extname(name).toLowerCase());

/** A folder's files: the images (by extension), and the others, both sorted. */
interface Listing {
  images: string[];
  others: string[];
}

function listingOf(dir: string, entries: readonly Entry[]): Listing {
  const files = entries.filter((e) => e.kind === 'file').map((e) => path.join(dir, e.name)).sort();
  return { images: files.filter((f) => isImage(f)), others: files.filter((f) => !isImage(f)) };
}

async function listFiles(dir: string): Promise<Listing> {
  return listingOf(dir, await readFolder(dir));
}

/** Whether the real path `inner` is `outer` or below it. */
const isWithin = (inner: string, outer: string): boolean => inner === outer || inner.startsWith(outer.endsWith(path.sep) ? outer : outer + path.sep);

/**
 * The files of `dir` and of every folder below it (options.recursive: as torchvision's ImageFolder reads a class), its
 * own first, then each subfolder's in name order, each folder once (a link back up ends there). A symbolic link is
 * followed to a folder inside the one walked (`tree`) only: one elsewhere in the data folder (`data`) is read there
 * (here it would give another class's images this one's label), and one out of it (`ln -s / photos/root` would walk
 * the whole file system) is added to `outside`. A subfolder this user may not list is left out, said. (The walk's own
 * root may be a link anywhere: a class, or a flat folder's subfolder, that is a link is read where it leads.)
 */
async function listTree(dir: string, walk: { data: string; leftOut: (message: string) => void; outside: string[] }, seen = new Set<string>(), tree?: string): Promise<Listing> {
  const real = await fs.realpath(dir);
  const root = tree ?? real;
  seen.add(real);
  const entries = await readFolder(dir);
  const listing = listingOf(dir, entries);
  for (const name of entries.filter((e) => e.kind === 'folder').map((e) => e.name).sort()) {
    const sub = path.join(dir, name);
    const target = await fs.realpath(sub);
    if (seen.has(target) || !isWithin(target, root)) {
      if (!seen.has(target) && !isWithin(target, walk.data)) walk.outside.push(sub);
      continue;
    }
    const below = await listedOrLeftOut(sub, (d) => listTree(d, walk, seen, root), walk.leftOut);
    listing.images.push(...(below?.images ?? []));
    listing.others.push(...(below?.others ?? []));
  }
  return listing;
}

async function listImages(dir: string): Promise<string[]> {
  return (await listFiles(dir)).images;
}

// A name whose bytes are not UTF-8 (a zip from Windows: latin1) reaches Node with U+FFFD in their place, and so
// names no file: say why, rather than "no such file".
function notUtf8(name: string): string | null {
  return name.includes('\uFFFD') ? 'its name is not valid UTF-8, which pirl cannot open: rename it (e.g. convmv -f latin1 -t utf8 -r --notest DIR)' : null;
}

/**
 * @internal Why each of `files` cannot be opened as an image file by its name, or null: missing (a link to nothing), a name
 * not UTF-8, the stat's error (`cause`); or not a file (no cause).
 */
export async function unopenable(files: readonly string[]): Promise<Array<{ why: string; cause?: Error } | null>> {
  return (await statAll(files)).map((stat, j) => {
    if (stat instanceof Error) return { why: notUtf8(files[j]) ?? ((stat as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : stat.message), cause: stat };
    return stat.isFile() ? null : { why: 'not a file' };
  });
}

// Formats by their first bytes: what an undecodable file is.
const SIGNATURES: Array<[string, (b: Buffer) => boolean]> = [
  ['JPEG', (b) => b[0] === 0xff && b[1] === 0xd8],
  ['PNG', (b) => b.subarray(0, 4).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47]))],
  ['GIF', (b) => b.toString('latin1', 0, 4) === 'GIF8'],
  ['WebP', (b) => b.toString('latin1', 0, 4) === 'RIFF' && b.toString('latin1', 8, 12) === 'WEBP'],
  ['TIFF', (b) => ['II*\0', 'MM\0*'].includes(b.toString('latin1', 0, 4))],
  ['AVIF', (b) => b.toString('latin1', 4, 8) === 'ftyp' && ['avif', 'avis'].includes(b.toString('latin1', 8, 12))],
  ['HEIC', (b) => b.toString('latin1', 4, 8) === 'ftyp' && ['heic', 'heix', 'hevc', 'mif1', 'msf1'].includes(b.toString('latin1', 8, 12))],
  ['BMP', (b) => b.toString('latin1', 0, 2) === 'BM'],
  ['SVG', (b) => /^\s*(<\?xml|<svg|<!DOCTYPE svg)/i.test(b.toString('latin1'))],
];
// What pirl decodes (IMAGE_EXTENSIONS' formats); the others above are named when refused.
const DECODED_FORMATS = ['JPEG', 'PNG', 'GIF', 'WebP', 'TIFF', 'AVIF'];
// The words of sharp's messages for each format (libheif reads AVIF): a message naming another format than the file's is another file's.
const FORMAT_WORDS = /jpe?g|png|gif|webp|tiff|heif|avif|bmp/gi;
const FORMAT_OF_WORD: Record<string, string> = { jpg: 'JPEG', jpeg: 'JPEG', png: 'PNG', gif: 'GIF', webp: 'WebP', tiff: 'TIFF', heif: 'AVIF', avif: 'AVIF', bmp: 'BMP' };

/** An image file's path, or an encoded image in memory (an upload). */
type ImageInput = string | Buffer;

// The first bytes of an image (what it is), or why its file cannot be read.
async function firstBytes(input: ImageInput): Promise<Buffer | Error> {
  if (typeof input !== 'string') {
    try {
      return input.subarray(0, 64);
    } catch {
      // Read in place: its ArrayBuffer was transferred meanwhile (postMessage, structuredClone).
      return new Error('its memory was detached (transferred away) before it was read');
    }
  }
  const file = input;
  const head = Buffer.alloc(64);
  try {
    const handle = await openRegular(file); // a FIFO's open hung
    try {
      return head.subarray(0, (await handle.read(head, 0, head.length, 0)).bytesRead);
    } finally {
      await handle.close();
    }
  } catch (e) {
    return e as Error;
  }
}

const formatOf = (bytes: Buffer): string | undefined => SIGNATURES.find(([, is]) => is(bytes))?.[0];

// sharp's message when it may be this file's: one naming another format than `format` is another decode's,
// and libvips's own words for "failed" (its first line alone) tell nothing.
function ownMessage(message: string, format: string | undefined): string {
  const said = message.split('\n')[0].replace(/:\s*$/, '');
  if (/^(unknown error|vipspng: libpng read error)$/i.test(said)) return '';
  return (said.match(FORMAT_WORDS) ?? []).some((w) => FORMAT_OF_WORD[w.toLowerCase()] !== format) ? '' : said;
}

const CRC_TABLE = Int32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c;
});
const crc32 = (bytes: Buffer): number => {
  let c = -1;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
};

/**
 * Where a PNG's chunks or a JPEG's markers say it is cut short or damaged (a download stopped, a disk error),
 * or undefined: libvips says only "read error". Read whole: this runs for images that failed.
 */
async function damageOf(input: ImageInput, format: string | undefined): Promise<string | undefined> {
  if (format !== 'PNG' && format !== 'JPEG') return undefined;
  const bytes = typeof input === 'string' ? await fs.readFile(input).catch(() => null) : input;
  if (bytes === null) return undefined;
  const size = bytes.length.toLocaleString('en-US');
  if (format === 'JPEG') return bytes.lastIndexOf(Buffer.from([0xff, 0xd9])) < 2 ? `truncated: ${size} bytes, without the end-of-image marker` : undefined;
  for (let at = 8; at + 8 <= bytes.length;) {
    const length = bytes.readUInt32BE(at), type = bytes.toString('latin1', at + 4, at + 8);
    if (!/^[A-Za-z]{4}$/.test(type) || length > 0x7fffffff) return `corrupt: no PNG chunk where one should start (byte ${at.toLocaleString('en-US')})`;
    const end = at + 12 + length;
    if (end > bytes.length) return `truncated: it ends inside its ${type} chunk (${size} of ${end.toLocaleString('en-US')} bytes)`;
    if (crc32(bytes.subarray(at + 4, end - 4)) !== bytes.readUInt32BE(end - 4)) return `corrupt: the checksum of its ${type} chunk (at byte ${at.toLocaleString('en-US')}) does not match its data`;
    if (type === 'IEND') return undefined;
    at = end;
  }
  return `truncated: ${size} bytes, without the IEND chunk that ends a PNG`;
}

/** Why an image was left out; `tooLarge`: whole and valid, over the pixel limit (not "unreadable"). */
interface LeftOutImage {
  reason: string;
  tooLarge?: true;
}

/**
 * Why an image cannot be decoded, from what it holds, with sharp's `message` ('' when there is none: a cache read back)
 * where it may be the image's own: alone it may be another image's (libvips keeps one error buffer for every decode in
 * flight), and it calls an HTML page "unsupported image format".
 */
async function whyLeftOut(input: ImageInput, message: string, maxPixels: number): Promise<LeftOutImage> {
  const bytes = await firstBytes(input);
  if (bytes instanceof Error) return { reason: (typeof input === 'string' ? notUtf8(input) : undefined) ?? bytes.message }; // missing, a link to nothing, not readable
  if (bytes.length === 0) return { reason: typeof input === 'string' ? 'an empty file (0 bytes)' : 'no bytes (an empty buffer)' };
  const format = formatOf(bytes);
  if (format === undefined) return { reason: `not an image: ${describeStart(bytes)}` };
  if (format === 'BMP' || format === 'HEIC' || format === 'SVG') return { reason: `${format === 'SVG' ? 'an' : 'a'} ${format} image, which pirl does not read (convert it to JPEG or PNG)` };
  // Whole and valid, only too large (a decompression bomb, or a scan): not "corrupt". Its header says so, also for a
  // cache read back (no message).
  const { width, height } = await sharp(input, { limitInputPixels: false }).metadata().catch(() => ({ width: undefined, height: undefined }));
  if ((width && height && width * height > maxPixels) || /exceeds pixel limit/.test(message)) {
    const limit = maxPixels === SHARP_MAX_PIXELS ? `sharp's limit of ${maxPixels.toLocaleString('en-US')} pixels` : `the limit of ${maxPixels.toLocaleString('en-US')} pixels (maxPixels, --max-pixels)`;
    return { reason: `a ${format} image too large to decode${width && height ? ` (${width}×${height})` : ''}: more than ${limit}`, tooLarge: true };
  }
  const damage = await damageOf(input, format);
  if (damage) return { reason: `a ${format} image that cannot be decoded: ${damage}` };
  const own = ownMessage(message, format);
  return { reason: `a ${format} image that cannot be decoded (truncated or corrupt)${own ? `: ${own}` : ''}` };
}

/** `work` on each item, `limit` at a time (the next started as one ends), the results in order; the first failure stops it. */
async function eachLimited<T, R>(items: readonly T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const lane = async () => {
    while (!failed && next < items.length) {
      const i = next++;
      results[i] = await work(items[i]).catch((e: unknown) => {
        failed = true;
        throw e;
      });
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}

// Decodes in flight: enough to keep libuv's pool (where sharp and fs work) busy.
const ioInFlight = (): number => 2 * Math.max(1, Number(process.env.UV_THREADPOOL_SIZE) || 4);

// Decodes in flight in the whole process (every folder, every call), each holding a turn: a decode is a job on
// libuv's pool, shared with fs, dns and zlib, and starts a sharp pipeline on the JS thread (a batch's 512 at once
// stalled it ~130 ms; 20 calls of 20 uploads at once delayed a file read ~0.5 s).
let decodeTurns: { free: number; waiting: Array<() => void> } | null = null;
async function inDecodeTurn<T>(work: () => Promise<T>): Promise<T> {
  const turns = (decodeTurns ??= { free: ioInFlight(), waiting: [] });
  if (turns.free > 0) {
    turns.free--;
  } else {
    await new Promise<void>((resolve) => turns.waiting.push(resolve));
  }
  try {
    return await work();
  } finally {
    const next = turns.waiting.shift(); // the turn passes on, or is free again
    if (next) next();
    else turns.free++;
  }
}

/** Each file's stat, or why there is none; 256 in flight: one at a time was ~16 µs each, 20 s for ImageNet. */
const statAll = (files: readonly string[]): Promise<Array<Stats | Error>> => eachLimited(files, 256, (f) => fs.stat(f).catch((e: Error) => e));

/**
 * The folder a data set's samples are read from (through Subsets: a held-out split) and each sample's file;
 * null for samples that are no folder's files.
 */
export function sampleFiles(dataset: Dataset): { folder: ImageFolder; file: (i: number) => string } | null {
  if (dataset instanceof ImageFolder) return { folder: dataset, file: (i) => dataset.files[i] };
  if (!(dataset instanceof Subset)) return null;
  const base = sampleFiles(dataset.base);
  return base && { folder: base.folder, file: (i) => base.file(dataset.indices[i]) };
}

/**
 * A file's path relative to `dir`, for files listed as path.join(dir, name): the prefix cut rather than both paths
 * resolved, ten million times for a large folder (path.relative for others).
 */
export function relativeTo(dir: string): (file: string) => string {
  const prefix = path.join(dir, 'x').slice(0, -1); // 'data/' for 'data', '' for '.' (path.join drops its './')
  return (file) => (file.startsWith(prefix) ? file.slice(prefix.length) : path.relative(dir, file));
}

/** A folder entry, symbolic links followed. */
interface Entry {
  name: string;
  kind: 'file' | 'folder' | 'other';
}

async function readFolder(dir: string): Promise<Entry[]> {
  let entries: Dirent[];
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch (err) {
    const { code } = err as NodeJS.ErrnoException;
    throw Object.assign(new Error(`${dir}: cannot list the folder: ${notUtf8(dir) ?? (err as Error).message}`), { code });
  }
  // Hidden entries are no images nor classes: .DS_Store, macOS's ._x.jpg (resource forks named like images), .thumbs/.
  const shown = entries.filter((e) => !e.name.startsWith('.'));
  return Promise.all(shown.map(async (e) => ({ name: e.name, kind: await kindOf(dir, e) })));
}

// A Dirent describes a symbolic link itself (and some file systems give no type): what it names decides.
// A link to nothing counts as a file: one named like an image is then skipped as unreadable, with a warning.
async function kindOf(dir: string, e: Dirent): Promise<Entry['kind']> {
  const target = e.isFile() || e.isDirectory() ? e : await fs.stat(path.join(dir, e.name)).catch(() => null);
  return !target || target.isFile() ? 'file' : target.isDirectory() ? 'folder' : 'other';
}

// A subfolder this user may not list (a mounted drive's lost+found, to all but root) is left out, said, rather than
// ending the read: null. Other failures (a name that is not UTF-8: a class folder, perhaps) still end it.
async function listedOrLeftOut<T>(dir: string, list: (dir: string) => Promise<T>, leftOut: (message: string) => void): Promise<T | null> {
  return list(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EACCES' && err.code !== 'EPERM') throw err;
    leftOut(`${err.message}: left out`);
    return null;
  });
}

// Images below a class folder's own files, which a labeled folder does not read: counted for a warning, the folders
// holding them added to `holding`. `seen` holds the real paths of the folders read, counted or left out (the root and
// its classes first), so a symbolic link back up the tree ends there rather than counting the classes' own images as
// left out; a link out of the folder counted (`within`: `ln -s / photos/root` walked the whole file system, /proc
// too) is not followed.
async function nestedImages(dir: string, seen: Set<string>, leftOut: (message: string) => void, holding: string[], within?: string): Promise<number> {
  const real = await fs.realpath(dir);
  const inside = within ?? real;
  seen.add(real);
  let count = 0;
  for (const e of await readFolder(dir)) {
    const sub = path.join(dir, e.name);
    if (e.kind !== 'folder') continue;
    const target = await fs.realpath(sub);
    if (seen.has(target) || !isWithin(target, inside)) continue;
    const images = await listedOrLeftOut(sub, listImages, leftOut);
    if (images === null) seen.add(target);
    else {
      if (images.length > 0) holding.push(sub);
      count += images.length + (await nestedImages(sub, seen, leftOut, holding, inside));
    }
  }
  return count;
}

/** The codes of a folder's warnings. */
export const FOLDER_WARNINGS = ['PIRL_UNREADABLE_IMAGE', 'PIRL_DAMAGED_IMAGE', 'PIRL_IMAGES_LEFT_OUT', 'PIRL_CACHE_WAIT', 'PIRL_CACHE_REBUILT'] as const;
export type FolderWarning = (typeof FOLDER_WARNINGS)[number];

// The first three of `paths` relative to `dir`, for a warning: which files or folders, not only how many.
const someOf = (dir: string, paths: readonly string[]): string => paths.slice(0, 3).map((p) => path.relative(dir, p)).join(', ') + (paths.length > 3 ? ', …' : '');

/**
 * The images `layout` reads in `dir` (each class folder's own, or the folder's own; `recursive`: every image below them too), their labels and classes, in
 * order; what it leaves out is told to `warnLeftOut`. Lists only: nothing is decoded.
 */
async function listFolder(dir: string, layout: FolderLayout, recursive: boolean, cache: string | null, warnLeftOut: (message: string) => void):
Promise<{ files: string[]; labels: Int32Array | null; classes: string[] | null }> {
  let stat;
  try {
    stat = await fs.stat(dir);
  } catch (err) {
    // Said by its cause, whose code (ENOENT, EACCES) stays on the error: a part of the path that is a file is no "no such folder".
    const code = (err as NodeJS.ErrnoException).code;
    throw errorFrom(`${dir}: ${code === 'ENOENT' ? 'no such folder' : code === 'ENOTDIR' ? 'not a folder (a part of its path is a file)' : (err as Error).message}`, err);
  }
  if (!stat.isDirectory()) throw new Error(`${dir}: not a folder`);
  const subdirs = (await readFolder(dir)).filter((e) => e.kind === 'folder').map((e) => e.name).sort();
  let files: string[] = [];
  let labels: Int32Array | null = null;
  let classes: string[] | null = null;
  let below = 0; // images in subfolders a flat read leaves out
  const flatBelow: Listing[] = []; // a recursive flat read's subfolders, each read once
  const unlisted = new Set<string>(); // real paths of the subfolders left out (listedOrLeftOut), said once
  // Each subfolder's own files, or (recursive) every file below it: a class's images, or a flat folder's below its own.
  // Recursive, a subfolder that is a link to the folder or above it is not walked: it would read them again (a link
  // above is said: what it leads to beside the folder is left out).
  const realDir = await fs.realpath(dir);
  const roots = await Promise.all(subdirs.map((d) => fs.realpath(path.join(dir, d)).catch(() => path.join(realDir, d)))); // (its listing says why it cannot be read)
  const outside = subdirs.map(() => [] as string[]); // the links out of the folder each subfolder's walk does not follow, in order
  const perClassListing = await Promise.all(subdirs.map(async (d, i) => {
    const sub = path.join(dir, d);
    if (recursive && isWithin(realDir, roots[i])) {
      if (roots[i] !== realDir) outside[i].push(sub);
      return { images: [], others: [] };
    }
    const listing = await listedOrLeftOut(sub, recursive ? (f) => listTree(f, { data: realDir, leftOut: warnLeftOut, outside: outside[i] }) : listFiles, warnLeftOut);
    if (listing === null) unlisted.add(roots[i]);
    return listing ?? { images: [], others: [] };
  }));
  const links = outside.flat();
  if (links.length > 0) warnLeftOut(`${dir}: ${links.length} link(s) to folders out of it are not followed (${someOf(dir, links)}): their images are left out`);
  const perClass = perClassListing.map((l) => l.images);
  const classFolders = subdirs.filter((_, i) => perClass[i].length > 0);
  const ownListing = await listFiles(dir);
  const own = ownListing.images;
  if (layout === 'auto' && own.length > 0 && classFolders.length > 0) throw new AmbiguousLayoutError(dir, own.length, classFolders, recursive);
  if (layout === 'classes' || (layout === 'auto' && classFolders.length > 0)) {
    classes = classFolders;
    const lists = perClass.filter((list) => list.length > 0);
    files = lists.flat();
    labels = Int32Array.from(lists.flatMap((list, label) => list.map(() => label)));
    // A labeled folder reads each class folder's own images: say what it leaves out.
    if (own.length > 0) {
      warnLeftOut(classes.length > 0 ? `${dir}: ${own.length} image(s) beside the class folders are not in a class and are left out`
        : `${dir}: its ${own.length} image(s) are left out: layout 'classes' reads class folders (one subfolder of images per class), and it has none`);
    }
    const seen = new Set([...unlisted, ...(await Promise.all([dir, ...classes.map((c) => path.join(dir, c))].map((d) => fs.realpath(d))))]);
    let nested = 0;
    const holding: string[] = [];
    for (const c of recursive ? [] : classes) nested += await nestedImages(path.join(dir, c), seen, warnLeftOut, holding);
    if (nested > 0) warnLeftOut(`${dir}: ${nested} image(s) in subfolders of class folders are left out (${someOf(dir, holding)}; a class is its folder's own images: recursive (--recursive) reads those below too)`);
    // Subfolders with no images of their own are no class: images deeper in them (c/2019/*.jpg) are left out, said, as
    // are folders of no images (a class of that name had vanished without a word). Walked only inside the data folder
    // (not through a link to / or ..), and not the cache's folder; those left out unlisted are in `seen`, said already.
    const cacheDir = cache === null ? null : path.dirname(await realPathOf(cache));
    const deeperHolding: string[] = [], empty: string[] = [];
    let deeper = 0;
    for (const [i, d] of subdirs.entries()) {
      if (perClass[i].length > 0) continue;
      const sub = path.join(dir, d);
      const real = await fs.realpath(sub).catch(() => null);
      const holdsCache = cacheDir !== null && real !== null && (cacheDir === real || cacheDir.startsWith(real + path.sep));
      if (real === null || seen.has(real) || !real.startsWith(realDir + path.sep) || holdsCache) continue;
      const n = recursive ? 0 : await nestedImages(sub, seen, warnLeftOut, deeperHolding, realDir).catch(() => 0); // recursive: none below it either
      const others = perClassListing[i].others.length;
      if (n > 0) deeper += n;
      else empty.push(others > 0 ? `${sub} (${others} file(s) without an image extension)` : sub);
    }
    if (deeper > 0) {
      warnLeftOut(`${dir}: ${deeper} image(s) in subfolders of folders that hold no images of their own are left out (${someOf(dir, deeperHolding)}; ` +
        "a class is its folder's own images: recursive (--recursive) reads those below too)");
    }
    if (empty.length > 0) warnLeftOut(`${dir}: ${empty.length} subfolder(s) hold no images and are no class (${someOf(dir, empty)})`);
  } else {
    // Recursive, each folder once: a subfolder that is a link into the folder (read where it leads) or into one read
    // before it (two links to one folder elsewhere) is not read again; its images are read there.
    const walked: string[] = [];
    for (const [i, root] of roots.entries()) {
      const intoFolder = root !== path.join(realDir, subdirs[i]) && isWithin(root, realDir);
      if (!recursive || intoFolder || walked.some((r) => isWithin(root, r))) continue;
      walked.push(root);
      flatBelow.push(perClassListing[i]);
    }
    files = [...own, ...flatBelow.flatMap((l) => l.images)];
    // Every level below, not its subfolders' own images only.
    const holding: string[] = [];
    below = subdirs.length > 0 && !recursive ? await nestedImages(dir, new Set(unlisted), warnLeftOut, holding) : 0;
    if (below > 0 && own.length > 0) warnLeftOut(`${dir}: ${below} image(s) in its subfolders are left out (${someOf(dir, holding)}; layout '${layout}' read the folder's own images: recursive (--recursive) reads those below too)`);
  }
  // Files of the folders read that are not read for their extension (a .bmp, a README): said, so that none is
  // missed unknowingly; the folder's own cache (FILE, FILE.lock) is no image either, nor news.
  const read = classes ? perClassListing.filter((l) => l.images.length > 0) : [ownListing, ...flatBelow];
  const skipped = read.flatMap((l) => l.others).filter((f) => cache === null || !path.resolve(f).startsWith(path.resolve(cache)));
  if (skipped.length > 0) warnLeftOut(`${dir}: ${skipped.length} file(s) without an image extension are left out (${someOf(dir, skipped)}; read: ${IMAGE_EXTENSIONS.join(' ')})`);
  if (files.length === 0) {
    const where = recursive ? (layout === 'classes' ? 'in class subfolders, at any depth' : 'in the folder and its subfolders, at any depth')
      : layout === 'flat' ? 'directly in the folder' : layout === 'classes' ? 'in class subfolders' : 'flat or in class subfolders';
    const deeper = below === 0 ? '' : classFolders.length > 0
      ? `; ${below} image(s) are in its subfolders: layout 'classes' reads class folders`
      : `; ${below} image(s) are deeper in its subfolders, which only recursive (--recursive) reads`;
    throw new Error(`${dir}: no images (looked for ${IMAGE_EXTENSIONS.join(' ')} files, ${where}${deeper})`);
  }
  return { files, labels, classes };
}

/** A warning of a folder's: to options.onWarning, else process.emitWarning, with its code. */
type Warn = (message: string, code: FolderWarning) => void;

/** sharp's own limit on an image's pixels: ImageFolderOptions.maxPixels's default. */
export const SHARP_MAX_PIXELS = 0x3fff * 0x3fff;

/** How a folder's or a list's images are decoded (ImageFolderOptions: size, maxPixels, onWarning). */
type DecodeOptions = Pick<ImageFolderOptions, 'size' | 'maxPixels' | 'onWarning'>;
const DECODE_OPTIONS = ['size', 'maxPixels', 'onWarning'] as const satisfies ReadonlyArray<keyof DecodeOptions>;

// How a folder's or a list's images are decoded: the stored side (default 64), the most pixels decoded, and where
// unreadable files are told.
function decoding(options: DecodeOptions): { size: number; maxPixels: number; warn: Warn } {
  const { onWarning } = options;
  return {
    size: checkInteger('options.size', options.size ?? folderImageSize(PRESETS[DEFAULT_PRESET]), 1, MAX_IMAGE_SIDE),
    maxPixels: checkInteger('options.maxPixels', options.maxPixels ?? SHARP_MAX_PIXELS, 1, Number.MAX_SAFE_INTEGER),
    warn: onWarning ?? ((message, code) => process.emitWarning(message, { code })),
  };
}

// options.layout and options.recursive, checked.
function layoutOf(options: Pick<ImageFolderOptions, 'layout' | 'recursive'>): { layout: FolderLayout; recursive: boolean } {
  return { layout: checkOneOf('options.layout', options.layout ?? DEFAULT_LAYOUT, FOLDER_LAYOUTS), recursive: checkBoolean('options.recursive', options.recursive ?? false) };
}

// A FIFO's open waited for a writer forever, and /dev/null read as an empty cache that the build renamed its copy over.
const notRegularCache = (cache: string) => rangeError('options.cache', 'a regular file or a new path', cache);

/**
 * options.cache checked before any work: a file path, not a folder (found only at the rename, after every image was
 * decoded), nor a FIFO or a device.
 */
async function checkCacheFile(given: unknown): Promise<string> {
  const cache = checkFile('options.cache', given);
  const target = await fs.stat(cache).catch(() => null);
  if (target?.isDirectory() || /[\\/]$/.test(cache)) throw rangeError('options.cache', 'a file, not a folder', cache);
  if (target && !target.isFile()) throw notRegularCache(cache);
  return cache;
}

/**
 * Builds `file` in one process only: the ranks of a data-parallel run open the same folder and cache at
 * once, and each would decode every image into a temporary copy of it. The first takes `file.lock`
 * (lockFile.ts); the others wait until the file is `ready`, saying so after a while, or take the lock
 * over from a builder that died.
 */
async function buildOnce(file: string, ready: () => Promise<boolean>, build: () => Promise<void>, say: (message: string) => void): Promise<void> {
  await makeFolderFor(file);
  const lock = `${file}.lock`;
  const waitingSince = Date.now();
  let said = false;
  for (;;) {
    const taken = await takeLock(lock).catch((err: unknown) => {
      // Said as the option's (it was the lock file's raw error).
      throw unwritable(err) ? Object.assign(rangeError('options.cache', `a path in a folder this process can write (${err.code} there)`, file), { code: err.code }) : err;
    });
    if ('held' in taken) {
      try {
        await removeStaleTemporaries(file); // of builders killed midway (Ctrl-C), which no one else removes
        if (!(await ready())) await build(); // built by another while this one took the lock
      } finally {
        await taken.held.release();
      }
      return;
    }
    if (!said && Date.now() - waitingSince > 10_000) {
      said = true;
      say(`waiting for ${taken.holder ?? 'another process'} to build the decode cache ${file} (if it is gone, remove ${lock})`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    if (await ready()) return;
  }
}

/** A cache's header as its JSON says (buildCache's); `length`: that JSON's bytes (spaces after it included). */
interface CacheHeader {
  length: number;
  signature?: unknown;
  count?: unknown;
  size?: unknown;
  folder?: unknown;
  version?: unknown;
  maxPixels?: unknown;
  index?: unknown;
  leftOut?: unknown;
}

async function readCacheHeader(handle: fs.FileHandle): Promise<CacheHeader> {
  const head = Buffer.alloc(8);
  await handle.read(head, 0, 8, 0);
  const length = Number(head.readBigUInt64LE(0));
  const json = Buffer.alloc(Math.min(length, 1 << 20));
  await handle.read(json, 0, json.length, 8);
  return { ...(JSON.parse(json.toString('utf8')) as object), length };
}

// The bytes of a cache's part after its pixels, as its header says (0: none, as in caches of an earlier pirl).
function trailerBytes(header: CacheHeader, part: 'index' | 'leftOut'): number {
  const bytes = header[part];
  return Number.isSafeInteger(bytes) && (bytes as number) > 0 ? (bytes as number) : 0;
}

// Folders of more files rebuild their cache whole: a rebuild holds a Map of the index's entries.
const MAX_INDEXED_FILES = 2_000_000;

// `bytes` written at `at` of `file`'s `handle` whole: a write may end short (a disk filling up), and its image would be taken as there.
async function writeAll(handle: fs.FileHandle, bytes: Buffer, at: number, file: string): Promise<void> {
  for (let done = 0; done < bytes.length;) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.length - done, at + done);
    if (bytesWritten === 0) throw new Error(`cannot write ${file}: the disk took none of ${bytes.length - done} bytes`);
    done += bytesWritten;
  }
}

// `slot` filled from `at` of `file`'s `handle`: one cut short gives an error, not an image of zeros.
async function readAll(handle: fs.FileHandle, slot: Buffer, at: number, file: string): Promise<void> {
  const { bytesRead } = await handle.read(slot, 0, slot.length, at);
  if (bytesRead !== slot.length) throw new Error(`${file} is cut short: ${bytesRead} of an image's ${slot.length} bytes at byte ${at} (remove it to build the cache anew)`);
}

// A cache being rebuilt: its file, why, where its pixels start, and which of its records hold this folder's unchanged images.
interface EarlierCache {
  handle: fs.FileHandle;
  records: Map<number, number>;
  dataStart: number;
  why: string;
}

// A folder dropped without close() closes its cache file when collected (Node warned, and will throw, when the
// handle itself was collected open).
const openCaches = new FinalizationRegistry<fs.FileHandle>((handle) => void handle.close().catch(() => undefined));

export class ImageFolder implements Dataset {
  readonly failures = new Map<string, string>();
  private damaged = new Set<string>(); // decoded despite errors: warned of once
  private cacheHandle: fs.FileHandle | null = null;
  private readonly reading = new Set<Promise<BatchSource>>(); // batchSource() calls in flight, which close() lets end
  private cacheDataStart = 0;
  private cacheRecords: readonly number[] | null = null; // each sample's record in the cache, where some are left out
  private cachedVersions: Array<FileVersion | null> | null = null; // the files' versions that the cache's pixels are of
  private leftOutByCache = 0; // not failures.size: a file changed since the build may fail later, a sample still
  private openedAs: FolderRead | null = null; // open()'s, kept with a run's checkpoint: its resume reads the folder so again

  private constructor(
    readonly dir: string,
    readonly files: string[],
    readonly labels: Int32Array | null,
    readonly classes: string[] | null,
    readonly size: number,
    /** An image of more pixels is left out undecoded (ImageFolderOptions.maxPixels). */
    readonly maxPixels: number,
    private readonly warn: Warn,
    private readonly inputs: readonly ImageInput[] = files, // what each of `files` names is decoded from
  ) {}

  static async open(dir: string, options: ImageFolderOptions = {}): Promise<ImageFolder> {
    if (typeof dir !== 'string' || dir === '') throw typeError('dir', 'a folder path', dir);
    checkFunctions('options', checkOptions('options', options, IMAGE_FOLDER_OPTIONS), ['onWarning', 'onCacheProgress']);
    const { size, maxPixels, warn } = decoding(options);
    const warnLeftOut = (message: string) => warn(message, 'PIRL_IMAGES_LEFT_OUT');
    const { layout, recursive } = layoutOf(options);
    const cache = options.cache === undefined ? null : await checkCacheFile(options.cache);
    const { files, labels, classes } = await listFolder(dir, layout, recursive, cache, warnLeftOut);
    const folder = new ImageFolder(dir, files, labels, classes, size, maxPixels, warn);
    folder.openedAs = { layout: labels ? 'classes' : 'flat', recursive };
    if (cache) return folder.openCache(cache, options.onCacheProgress);
    await folder.probe();
    return folder;
  }

  /**
   * @internal The images open() reads in `dir` by `options.layout`, what it leaves out warned of, listed and not
   * decoded (not probed): a query folder's, whose unreadable images are each told as they are embedded.
   */
  static async list(dir: string, options: Pick<ImageFolderOptions, 'layout' | 'recursive' | 'onWarning'> = {}): Promise<readonly string[]> {
    if (typeof dir !== 'string' || dir === '') throw typeError('dir', 'a folder path', dir);
    checkFunctions('options', checkOptions('options', options, ['layout', 'recursive', 'onWarning']), ['onWarning']);
    const { warn } = decoding({ onWarning: options.onWarning });
    const { layout, recursive } = layoutOf(options);
    return (await listFolder(dir, layout, recursive, null, (message) => warn(message, 'PIRL_IMAGES_LEFT_OUT'))).files;
  }

  /**
   * Image files named one by one (a query, a list from elsewhere) as an unlabeled data set, in their order,
   * decoded at `options.size` as a folder's; its `dir` is their deepest common folder. An entry may also be an
   * encoded image in memory (a Buffer or Uint8Array: an upload), read in place (not copied: left unchanged until
   * done with) and named `files[i]` in `files` and `failures`. Unlike open(), it does not fail when none of them
   * decodes: each is left out when read, warned of and recorded in `failures`.
   */
  static async fromFiles(files: readonly (string | Uint8Array)[], options: DecodeOptions = {}): Promise<ImageFolder> {
    return ImageFolder.fromList(files, 'files', options);
  }

  /** @internal fromFiles, for a list that the caller calls `name` (embedImages's `images`). */
  static async fromList(list: readonly (string | Uint8Array)[], name: string, options: DecodeOptions): Promise<ImageFolder> {
    if (!Array.isArray(list) || list.length === 0) throw typeError(name, 'a non-empty array of image file paths or encoded images', list);
    const inputs = list.map((entry: unknown, i): ImageInput => {
      if (entry instanceof Uint8Array) {
        // Bytes transferred away (to a worker) are named (V8 spoke of "Construct on a detached ArrayBuffer"); an empty
        // buffer is an unreadable image, as an empty file is.
        if (entry.byteLength === 0 && isDetached(entry.buffer)) throw typeError(`${name}[${i}]`, "an encoded image whose bytes are still this thread's", entry);
        return Buffer.from(entry.buffer, entry.byteOffset, entry.byteLength);
      }
      if (typeof entry !== 'string' || entry === '') throw typeError(`${name}[${i}]`, 'an image file path or an encoded image (Buffer, Uint8Array)', entry);
      return entry;
    });
    checkFunctions('options', checkOptions('options', options, DECODE_OPTIONS), ['onWarning']);
    const { size, maxPixels, warn } = decoding(options);
    const paths = inputs.map((input, i) => ({ file: input, i })).filter((p): p is { file: string; i: number } => typeof p.file === 'string');
    (await unopenable(paths.map((p) => p.file))).forEach((problem, j) => {
      if (!problem) return;
      const { file, i } = paths[j];
      if (problem.cause) throw errorFrom(`${file}: ${problem.why} (${name}[${i}])`, problem.cause); // its code (ENOENT) kept, as a model file's is
      // The folder's own images are one call away: embedImages takes the folder itself, a data set ImageFolder.open.
      const folderCall = name === 'images' ? 'embedImages(model, folder)' : 'ImageFolder.open';
      throw new Error(`${file}: not a file (${name}[${i}]; a folder's images: ${folderCall})`);
    });
    const resolved = paths.map((p) => path.resolve(p.file));
    let dir = resolved.length > 0 ? path.dirname(resolved[0]) : process.cwd();
    while (!resolved.every((f) => f.startsWith(dir.endsWith(path.sep) ? dir : dir + path.sep))) dir = path.dirname(dir);
    const names = inputs.map((input, i) => (typeof input === 'string' ? input : `${name}[${i}]`));
    // Not probed as a folder is: each image was asked for, and each unreadable one is told (failures) as it is read.
    return new ImageFolder(dir, names, null, null, size, maxPixels, warn, inputs);
  }

  get length(): number {
    return this.files.length;
  }

  /** @internal How open() read the folder; null for a list of files (fromFiles). */
  get readAs(): FolderRead | null {
    return this.openedAs;
  }

  /**
   * Images found unreadable when the folder's cache was built, left out of the data set (`files`, `length`,
   * `labels` hold the readable ones; `failures` says why of each): its batches stay full and they have no bank
   * row. 0 without a cache, whose unreadable images are left out of their batches as they are read.
   */
  get leftOut(): number {
    return this.leftOutByCache;
  }

  /** One image as size×size×3 bytes, or null (warned once, recorded in `failures`). */
  async decode(index: number): Promise<Buffer | null> {
    const file = this.files[checkInteger('index', index, 0, this.length - 1)];
    const input = this.inputs[index];
    try {
      // A file known to be damaged or unreadable is not tried strictly again (each epoch would).
      if (this.damaged.has(file) || this.failures.has(file)) return await this.decodeImage(input, 'truncated');
      return await this.decodeImage(input, 'warning').catch(async (strict: Error) => {
        // Damaged but decodable (a JPEG with corrupt data: part of it grey): kept, as other readers keep it, and said.
        const data = await this.decodeImage(input, 'truncated');
        this.damaged.add(file);
        const bytes = await firstBytes(input);
        const format = bytes instanceof Error ? undefined : formatOf(bytes);
        const own = (await damageOf(input, format)) ?? ownMessage(strict.message, format);
        this.warn(`${file} is damaged (decoded, part of it may be missing)${own ? `: ${own}` : ''}`, 'PIRL_DAMAGED_IMAGE');
        return data;
      });
    } catch (err) {
      if (!this.failures.has(file)) {
        const why = await whyLeftOut(input, (err as Error).message, this.maxPixels);
        this.failures.set(file, why.reason);
        this.warnLeftOut(file, why);
      }
      return null;
    }
  }

  private warnLeftOut(file: string, why: LeftOutImage): void {
    this.warn(`skipping ${why.tooLarge ? '' : 'unreadable '}image ${file}: ${why.reason}`, 'PIRL_UNREADABLE_IMAGE');
  }

  // size×size sRGB bytes; `failOn` as sharp's. Transparency is composited on white whatever the size (resizing
  // alone turned it black, an image already size×size showed the colour hidden under it).
  private decodeImage(input: ImageInput, failOn: 'warning' | 'truncated'): Promise<Buffer> {
    return inDecodeTurn(() => this.decodeNow(input, failOn));
  }

  private async decodeNow(input: ImageInput, failOn: 'warning' | 'truncated'): Promise<Buffer> {
    // sharp decodes by content, whatever the name: an SVG named .png (librsvg: a 3 MB upload asked for gigabytes and
    // aborted the process, and drew the folder's other files in) or any format pirl does not list is not tried.
    const head = await firstBytes(input);
    if (head instanceof Error) throw head;
    const format = formatOf(head);
    if (format === undefined || !DECODED_FORMATS.includes(format)) throw new Error(`not a format pirl reads (${format ?? 'unknown'})`);
    const { data, info } = await sharp(input, { failOn, animated: false, limitInputPixels: this.maxPixels })
      .rotate()
      .flatten({ background: '#ffffff' })
      .resize(this.size, this.size, { fit: 'cover' })
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3 || data.length !== this.size * this.size * 3) throw new Error(`decoded to ${info.channels} channels`);
    return data;
  }

  // Without a cache: an unreadable data set must fail now, not after training has started. The sample spans the
  // folder (its first files alone may be a scraper's error pages named like images).
  private async probe(): Promise<void> {
    const count = Math.min(32, this.length);
    const sample = Array.from({ length: count }, (_, i) => Math.floor((i * this.length) / count));
    const decoded = await Promise.all(sample.map((i) => this.decode(i)));
    if (decoded.every((d) => d === null)) {
      throw new Error(`${this.dir}: none of ${count} images sampled across the folder could be decoded (see the warnings)`);
    }
  }

  /**
   * @internal Each of `files` (null: missing, a link to nothing) as its pixels are read: with a cache, as the cache's
   * check saw it (a change since waits for the next open); else now, before a pass's decodes. What was made of a file
   * before (embedImages's reuse) is of it while its version is the same.
   */
  async versions(): Promise<Array<FileVersion | null>> {
    // Each stat kept as its three numbers at once: ten million fs.Stats held together would take gigabytes.
    return this.cachedVersions ?? eachLimited(this.files, 256, (f) => fs.stat(f).then((s) => ({ bytes: s.size, modifiedMs: s.mtimeMs, changedMs: s.ctimeMs }), () => null));
  }

  private signature(versions: ReadonlyArray<FileVersion | null>): string {
    // Another limit leaves out other images: a cache made under one is rebuilt under another (sharp's: as before it could be set).
    const limit = this.maxPixels === SHARP_MAX_PIXELS ? '' : ` ${this.maxPixels}`;
    const hash = createHash('sha256').update(`pirl-cache ${CACHE_VERSION} ${this.size}${limit}\n`);
    const relative = relativeTo(this.dir);
    this.files.forEach((file, i) => {
      const v = versions[i];
      // Not the change time: a copy of the data (rsync -a, a node's local disk) keeps the rest, and its cache with it.
      hash.update(`${relative(file)}\t${v ? `${v.bytes}\t${v.modifiedMs}` : 'missing'}\n`);
    });
    return hash.digest('hex');
  }

  private get imageBytes(): number {
    return this.size * this.size * 3;
  }

  // Cache file: 8-byte header length, JSON header (buildCache's), one validity byte per image (read at once when opened: a
  // byte per record was a read per image, 35 s for ImageNet), the images' pixels, then the file index (buildCache's).
  private cacheBytes(headerBytes: number): number {
    return 8 + headerBytes + this.files.length * (1 + this.imageBytes);
  }

  // The folder of this one's readable images, read from its cache `file` (built first where it is missing or stale).
  private async openCache(file: string, onProgress?: (done: number, total: number) => void): Promise<ImageFolder> {
    const versions = await this.versions(); // a link to nothing: unreadable until it names a file
    const signature = this.signature(versions);
    const ready = async () => (await this.cacheState(file, signature)) === 'ready';
    if (!(await ready())) await buildOnce(file, ready, () => this.buildCache(file, signature, versions, onProgress), (m) => this.warn(m, 'PIRL_CACHE_WAIT'));
    const handle = await openRegular(file, () => notRegularCache(file));
    try {
      const h = await readCacheHeader(handle);
      const flagsStart = 8 + h.length;
      const flags = Buffer.alloc(this.files.length);
      await handle.read(flags, 0, flags.length, flagsStart);
      // Those its builder did not say in this process (it said each as it found it), said once as a whole: a run
      // through the cache told each every time, ~5,000 lines at 0.5% of a million images.
      const unsaid = this.files.map((_, i) => i).filter((i) => flags[i] !== 1 && !this.failures.has(this.files[i]));
      if (unsaid.length > 0) {
        const why = await this.leftOutReasons(handle, h, unsaid);
        unsaid.forEach((i, k) => this.failures.set(this.files[i], why[k]));
        const relative = relativeTo(this.dir);
        const some = unsaid.slice(0, 3).map((i, k) => `${relative(this.files[i])}: ${why[k]}`).join('; ');
        this.warn(`${this.dir}: skipping ${unsaid.length} image(s) found unreadable or too large when its decode cache ${file} was built ` +
          `(${some}${unsaid.length > 3 ? `; and ${unsaid.length - 3} more` : ''})`, 'PIRL_UNREADABLE_IMAGE');
      }
      if (flags.every((flag) => flag !== 1)) throw new Error(`${this.dir}: none of its ${this.files.length} images could be decoded`);
      const records = this.files.map((_, i) => i).filter((i) => flags[i] === 1);
      const folder = records.length === this.files.length ? this : this.readable(records);
      folder.cachedVersions = records.map((i) => versions[i]);
      folder.cacheDataStart = flagsStart + this.files.length;
      folder.cacheHandle = handle;
      openCaches.register(folder, handle, folder);
      return folder;
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  // Why each of the images at `places` was left out, as the cache's builder said it; found again from what each file
  // holds where the cache does not say (one of an earlier pirl).
  private async leftOutReasons(handle: fs.FileHandle, h: CacheHeader, places: readonly number[]): Promise<string[]> {
    const bytes = trailerBytes(h, 'leftOut'), said = new Map<number, string>();
    if (bytes > 0) {
      const text = Buffer.alloc(bytes);
      await handle.read(text, 0, bytes, this.cacheBytes(h.length) + trailerBytes(h, 'index'));
      for (const l of text.toString('utf8').split('\n')) {
        let entry: unknown;
        try {
          entry = JSON.parse(l);
        } catch {
          continue; // damaged: its image's reason found again
        }
        if (Array.isArray(entry) && typeof entry[0] === 'number' && typeof entry[1] === 'string') said.set(entry[0], entry[1]);
      }
    }
    return eachLimited(places, 256, async (i) => said.get(i) ?? (await whyLeftOut(this.files[i], '', this.maxPixels)).reason);
  }

  /** @internal See LISTED_PLACES: with a cache that left images out, each sample's place in the folder's listing. */
  [LISTED_PLACES](): readonly number[] | null {
    return this.cacheRecords;
  }

  // This folder less its unreadable images: `records` are the readable ones' places, here and in the cache.
  private readable(records: number[]): ImageFolder {
    const folder = new ImageFolder(this.dir, records.map((i) => this.files[i]), this.labels && Int32Array.from(records, (i) => this.labels![i]),
      this.classes, this.size, this.maxPixels, this.warn);
    // In the folder's order (a build's decodes end in any order): as `files`, so `failures` lists them.
    for (const f of this.files) if (this.failures.has(f)) folder.failures.set(f, this.failures.get(f)!);
    folder.damaged = this.damaged;
    folder.cacheRecords = records;
    folder.leftOutByCache = this.files.length - records.length;
    return folder;
  }

  // Whether `file` holds this folder's images at this size (false: none yet, or stale: rebuilt). Any other file
  // is refused, not overwritten (--cache naming a checkpoint by mistake), and so is another size's cache
  // (another run's, or another side's: pirl embed's next to pirl train's).
  private async cacheState(file: string, signature: string): Promise<'ready' | 'missing' | 'stale' | 'cut'> {
    let h: CacheHeader | null, bytes: number;
    try {
      const handle = await openRegular(file, () => notRegularCache(file)); // made one since open() checked it
      try {
        bytes = (await handle.stat()).size;
        if (bytes === 0) return 'missing'; // holds nothing to lose
        h = await readCacheHeader(handle);
      } finally {
        await handle.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
      if (isArgumentError(err)) throw err;
      h = null; // unreadable as a cache
    }
    if (typeof h?.signature !== 'string' || !/^[0-9a-f]{64}$/.test(h.signature) || typeof h.count !== 'number' || typeof h.size !== 'number') {
      throw rangeError('options.cache', 'a new file or a pirl decode cache, not a file that holds something else (pirl does not overwrite it)', file);
    }
    if (h.size !== this.size) {
      throw new Error(`${file} caches images at ${h.size} px; this folder is read at ${this.size} px: give another cache file (or remove ${file} to rebuild it at ${this.size} px)`);
    }
    // Another folder's (--cache shared by two runs): refused, not overwritten. The same images moved keep their signature.
    const folder = path.resolve(this.dir);
    if (h.signature !== signature && typeof h.folder === 'string' && h.folder !== folder) {
      throw new Error(`${file} caches the images of another folder, ${h.folder}: give another cache file (or remove ${file} to cache ${folder} in it)`);
    }
    if (h.signature !== signature) return 'stale';
    return bytes! === this.cacheBytes(h.length) + trailerBytes(h, 'index') + trailerBytes(h, 'leftOut') ? 'ready' : 'cut';
  }

  // The cache's header: {signature, count, size, folder, version, maxPixels, index, leftOut: the bytes of the two parts
  // after the pixels}. The file index (where an earlier pirl, which reads the header alone, finds a stale cache, and
  // rebuilds it): a line per file, its name in the folder and version ([name, bytes, modifiedMs]: what the signature
  // hashes), by which a rebuild keeps the unchanged images' pixels. Then a line per image left out, [its place, why]: as
  // the build said it, read back (the file again gave less: no decoder's own words).
  private async buildCache(file: string, signature: string, versions: ReadonlyArray<FileVersion | null>, onProgress?: (done: number, total: number) => void): Promise<void> {
    const relative = relativeTo(this.dir);
    const indexed = this.files.length <= MAX_INDEXED_FILES; // a Map of its entries in a rebuild: ~400 bytes each
    const line = (i: number) => `${JSON.stringify([relative(this.files[i]), versions[i]?.bytes ?? null, versions[i]?.modifiedMs ?? null])}\n`;
    const header = (index: number, leftOut: number) => Buffer.from(JSON.stringify({ signature, count: this.files.length, size: this.size,
      folder: path.resolve(this.dir), version: CACHE_VERSION, maxPixels: this.maxPixels, index, leftOut }));
    const earlier = await this.earlierRecords(file, (i) => line(i).slice(0, -1));
    try {
      const partial = `${file}.partial`;
      const room = header(Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER).length; // the header's, at the largest sizes of the parts after the pixels
      const done = await this.partialDone(partial, signature, room);
      if (done) {
        this.warn(`continuing the build of the decode cache ${file} that was interrupted (${partial}): ${done.written} of ${this.files.length} images written before`, 'PIRL_CACHE_REBUILT');
      } else if (earlier) {
        // Said: a rebuild is long where many images changed, as the first build (it was silent, and decoded them all).
        const decoded = this.files.length - earlier.records.size;
        this.warn(`the decode cache ${file} ${earlier.why}: rebuilding it, ${earlier.records.size === 0 ? 'every image decoded again'
          : `${decoded} of ${this.files.length} images decoded again (the unchanged ones' pixels kept)`}`, 'PIRL_CACHE_REBUILT');
      }
      await this.writeCache(partial, header, room, earlier, done, onProgress, indexed ? line : null);
      await fs.rename(partial, file).catch((err: Error) => Promise.reject(errorFrom(`cannot write ${file}: ${err.message}`, err)));
      await syncFolder(path.dirname(path.resolve(file)));
    } finally {
      await earlier?.handle.close();
    }
  }

  // The validity bytes of `partial`, a build of this cache interrupted (each 1: its image was written), where it was of
  // these files as they are now (`signature`), at this size and limit, by this pirl; otherwise, or with none, null (one
  // of this folder's files as they were is removed: a build starts over; another folder's is refused).
  private async partialDone(partial: string, signature: string, room: number): Promise<{ flags: Buffer; written: number } | null> {
    const handle = await fs.open(partial, 'r').catch(() => null);
    if (handle === null) return null;
    let h: CacheHeader | null = null, read = 0;
    const flags = Buffer.alloc(this.files.length);
    try {
      h = await readCacheHeader(handle);
      read = (await handle.read(flags, 0, flags.length, 8 + room)).bytesRead;
    } catch {
      h = null; // not one: removed below
    } finally {
      await handle.close();
    }
    // Another folder's (--cache shared by two runs) is refused, as its cache would be: not removed.
    if (h && h.signature !== signature && typeof h.folder === 'string' && h.folder !== path.resolve(this.dir)) {
      throw new Error(`${partial} is the interrupted build of the cache of another folder, ${h.folder}: give another cache file (or remove ${partial})`);
    }
    const ours = h?.signature === signature && h.version === CACHE_VERSION && h.count === this.files.length && h.size === this.size && h.maxPixels === this.maxPixels && h.length === room;
    if (ours && read === flags.length) return { flags: Buffer.from(flags.map((flag) => (flag === 1 ? 1 : 0))), written: flags.reduce((n, flag) => n + (flag === 1 ? 1 : 0), 0) };
    await fs.rm(partial, { force: true });
    return null;
  }

  // A cache `file` already there (stale: built from other files, or cut short), open, with why it is rebuilt and, where it
  // holds this folder's images as this pirl decodes them at this size and limit, with a file index, the record of each
  // unchanged readable image (this folder's place → its record there); null where there is none. `entry(i)`: file i's
  // index line as this build writes it.
  private async earlierRecords(file: string, entry: (i: number) => string): Promise<EarlierCache | null> {
    const handle = await fs.open(file, 'r').catch(() => null);
    if (handle === null) return null;
    const records = new Map<number, number>();
    try {
      const bytes = (await handle.stat()).size;
      if (bytes < 8) {
        await handle.close();
        return null; // holds nothing (a first build)
      }
      const h = await readCacheHeader(handle) as CacheHeader & { count: number };
      const dataStart = 8 + h.length + h.count, indexStart = dataStart + h.count * this.imageBytes, index = trailerBytes(h, 'index');
      if (bytes !== indexStart + index + trailerBytes(h, 'leftOut')) return { handle, records, dataStart, why: 'is not as long as its header says (cut short?)' };
      // Another pirl's pixels (its decoding, or none of its index) and another limit's (images this one leaves out) are not kept.
      const why = h.version !== CACHE_VERSION ? 'was built by another version of pirl'
        : h.maxPixels !== this.maxPixels ? 'was built under another maxPixels'
          : `was built before files of ${this.dir} were added, removed or changed (name, size, modification time)`;
      if (h.version !== CACHE_VERSION || h.maxPixels !== this.maxPixels || h.size !== this.size || index === 0) return { handle, records, dataStart, why };
      const recordOf = new Map<string, number>();
      const utf8 = new StringDecoder('utf8'); // a part may end inside a character
      let record = 0, rest = '';
      for (let at = 0; at < index; at += 1 << 24) {
        const part = Buffer.alloc(Math.min(1 << 24, index - at));
        await handle.read(part, 0, part.length, indexStart + at);
        const lines = (rest + utf8.write(part)).split('\n');
        rest = lines.pop()!; // a line the next part ends
        for (const l of lines) recordOf.set(l, record++);
      }
      const flags = Buffer.alloc(h.count);
      await handle.read(flags, 0, h.count, 8 + h.length);
      for (let i = 0; i < this.files.length; i++) {
        const then = recordOf.get(entry(i));
        if (then !== undefined && then < h.count && flags[then] === 1) records.set(i, then);
      }
      return { handle, records, dataStart, why };
    } catch {
      return { handle, records, dataStart: 0, why: 'could not be read as a cache of its files' }; // cacheState read its header
    }
  }

  // The cache, built in `partial`: its header first with its parts after the pixels empty, then again once they are
  // written, in the room its JSON takes at their largest sizes (padded with spaces, which JSON allows). Each image's
  // validity byte is written after its pixels are on the disk (synced every few seconds, and when the build fails), so
  // that a build interrupted anyhow (Ctrl-C, kill -9, a power cut) leaves `partial` to continue: `continued` holds the
  // images it wrote (1), which are not written again, and how many. `room`: the header's bytes.
  private async writeCache(partial: string, header: (index: number, leftOut: number) => Buffer, room: number, earlier: EarlierCache | null,
    continued: { flags: Buffer; written: number } | null, onProgress: ((done: number, total: number) => void) | undefined, line: ((i: number) => string) | null): Promise<void> {
    const done = continued?.flags ?? null;
    const flagsStart = 8 + room, dataStart = flagsStart + this.files.length;
    const handle = await fs.open(partial, done ? 'r+' : 'w');
    const write = (bytes: Buffer, at: number) => writeAll(handle, bytes, at, partial);
    const writeHeader = (json: Buffer) => {
      const head = Buffer.alloc(8 + room, ' ');
      head.writeBigUInt64LE(BigInt(room));
      json.copy(head, 8);
      return write(head, 0);
    };
    let pending: Array<{ at: number; flags: Buffer }> = [], synced = Date.now(), syncFailed = false;
    const flush = async () => {
      if (syncFailed) return; // a second sync may succeed without the pages the first lost: no validity byte after it
      // The pixels first: a validity byte on the disk says its image is there too.
      await handle.datasync().catch((err: unknown) => Promise.reject(((syncFailed = true), err)));
      for (const { at, flags } of pending) await write(flags, at);
      [pending, synced] = [[], Date.now()];
    };
    try {
      if (!done) await writeHeader(header(0, 0));
      const leftOut: string[] = [];
      const total = this.files.length - (continued?.written ?? 0);
      let written = 0;
      onProgress?.(0, total); // its rate runs from here (not from the listing, the hashing or a wait for the lock)
      const chunk = 64;
      for (let begin = 0; begin < this.files.length; begin += chunk) {
        const indices = this.files.slice(begin, begin + chunk).map((_, i) => begin + i);
        const fresh = indices.filter((i) => done?.[i] !== 1);
        if (fresh.length === 0) continue;
        const images = Buffer.alloc(indices.length * this.imageBytes); // an unreadable image's stay zero
        const slot = (k: number) => images.subarray(k * this.imageBytes, (k + 1) * this.imageBytes);
        // An image written before the build was interrupted is read back (the chunk is written whole), an unchanged one's
        // pixels are the earlier cache's; the others are decoded.
        const read = await Promise.all(indices.map(async (i, k) => {
          const record = earlier?.records.get(i);
          if (done?.[i] === 1 || record !== undefined) {
            const [from, at] = done?.[i] === 1 ? [handle, dataStart + i * this.imageBytes] : [earlier!.handle, earlier!.dataStart + record! * this.imageBytes];
            await readAll(from, slot(k), at, done?.[i] === 1 ? partial : 'the earlier cache');
            return true;
          }
          const decoded = await this.decode(i);
          decoded?.copy(slot(k));
          return decoded !== null;
        }));
        for (const [k, i] of indices.entries()) if (!read[k]) leftOut.push(`${JSON.stringify([i, this.failures.get(this.files[i])])}\n`);
        await write(images, dataStart + begin * this.imageBytes);
        pending.push({ at: flagsStart + begin, flags: Buffer.from(read.map((r) => (r ? 1 : 0))) });
        if (Date.now() - synced > 2_000) await flush();
        written += fresh.length;
        onProgress?.(written, total);
      }
      await flush();
      // The index, a part at a time (one string of ten million entries is past V8's longest).
      const indexStart = dataStart + this.files.length * this.imageBytes;
      let at = indexStart;
      for (let begin = 0; line && begin < this.files.length; begin += 65_536) {
        const part = Buffer.from(Array.from({ length: Math.min(65_536, this.files.length - begin) }, (_, k) => line(begin + k)).join(''));
        await write(part, at);
        at += part.length;
      }
      const reasons = Buffer.from(leftOut.join(''));
      await write(reasons, at);
      await handle.truncate(at + reasons.length);
      await writeHeader(header(at - indexStart, reasons.length));
      await handle.sync(); // whole on the disk before its rename makes it the cache
    } catch (err) {
      await flush().catch(() => undefined); // what is written stays written for the next build
      throw err;
    } finally {
      await handle.close();
    }
  }

  // Reads image `index` from the cache (`handle`) into `slot`; false when it is unreadable.
  private async cached(handle: fs.FileHandle, index: number, slot: Uint8Array): Promise<boolean> {
    if (this.failures.has(this.files[index])) return false;
    const record = this.cacheRecords?.[index] ?? index;
    await handle.read(slot, 0, slot.length, this.cacheDataStart + record * this.imageBytes);
    return true;
  }

  async batchSource(indices: readonly number[]): Promise<BatchSource> {
    checkIndices(indices, this.length);
    const batch = this.read(indices, this.cacheHandle);
    this.reading.add(batch);
    try {
      return await batch;
    } finally {
      this.reading.delete(batch);
    }
  }

  private async read(indices: readonly number[], cache: fs.FileHandle | null): Promise<BatchSource> {
    // Each image lands in its slot of the batch's tensor as it comes (an unreadable one's is left out of `rows`):
    // a batch-sized copy or two on the JS thread held it ~70 ms for 256 images at 292 px.
    const source = Tensor.empty([indices.length, this.size, this.size, 3], { dtype: 'uint8' });
    const slots = source.data() as Uint8Array;
    const slot = (k: number) => slots.subarray(k * this.imageBytes, (k + 1) * this.imageBytes);
    const places = indices.map((_, k) => k);
    // A cache read is one positioned read: cheap to start, so more are in flight than decodes (inDecodeTurn).
    const read = cache
      ? await eachLimited(places, 8 * ioInFlight(), (k) => this.cached(cache, indices[k], slot(k)))
      : await Promise.all(places.map(async (k) => {
        const image = await this.decode(indices[k]);
        image?.copy(slot(k));
        return image !== null;
      }));
    const kept = places.filter((k) => read[k]);
    return { source, rows: int64Tensor(kept), indices: kept.map((k) => indices[k]), owned: true };
  }

  /**
   * Closes the cache file, if any (a folder collected unclosed closes it then), once the batches being read from it
   * are read (a close during a run's reads failed them as "EBADF: file closed"); later batches decode the images.
   */
  async close(): Promise<void> {
    openCaches.unregister(this);
    const handle = this.cacheHandle;
    this.cacheHandle = null;
    await Promise.allSettled([...this.reading]);
    await handle?.close();
  }
}
