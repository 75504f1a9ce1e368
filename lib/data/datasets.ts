// Image sources: every sample has its index (its memory-bank row) and, where known, a label.
import { promises as fs } from 'fs';
import * as path from 'path';
import { promisify } from 'util';
import * as zlib from 'zlib';

import { binding } from '../binding';
import { checkFile, checkInteger, checkOneOf, checkOptions, rangeError, typeError } from '../errors';
import { openRegular } from '../folders';
import { Tensor, int64Tensor } from '../tensor';

const gunzip = promisify(zlib.gunzip);

/** What the sampler reads for a batch: uint8 N×H×W×C images and the rows of the requested samples. */
export interface BatchSource {
  source: Tensor;
  rows: Tensor;
  /** The dataset indices actually present (unreadable samples are left out). */
  indices: number[];
  /**
   * source and rows were made for this answer alone (an ImageFolder's batch of decoded images): the loader
   * disposes them once it has made the batch, rather than leave a batch's pixels to the garbage collector.
   * Default false: a data set's own tensor (ArrayDataset's) is left alone.
   */
  owned?: boolean;
}

export interface Dataset {
  readonly length: number;
  /** Per-index labels, or null for unlabeled data. */
  readonly labels: Int32Array | null;
  /** Class names by label, where known. */
  readonly classes: string[] | null;
  batchSource(indices: readonly number[]): Promise<BatchSource>;
}

/**
 * dataset.batchSource(indices), its answer checked: rows of `source` and the samples present among those asked
 * (each once, as many as rows) — another sample's index would update another memory-bank row, silently.
 */
export async function sourceOf(dataset: Dataset, indices: readonly number[]): Promise<BatchSource> {
  // The caller's indices are the caller's fault: a repeated one was blamed on the data set's answer.
  checkIndices(indices, dataset.length);
  const asked = `dataset.batchSource() of ${indices.length} indices (${indices.slice(0, 3).join(', ')}${indices.length > 3 ? ', …' : ''})`;
  let answer: BatchSource;
  try {
    answer = await dataset.batchSource(indices);
  } catch (err) {
    throw err instanceof Error ? err : new Error(`${asked} failed with ${typeof err === 'string' ? JSON.stringify(err) : String(err)}`);
  }
  const { source, rows, indices: present, owned } = (answer ?? {}) as Partial<BatchSource>;
  // By handle, not class: a Dataset built on another copy of pirl (its own Tensor class) answers with its tensors.
  const isTensor = (t: unknown): t is Tensor => (t as Tensor | undefined)?.handle instanceof binding.TensorHandle;
  if (!isTensor(source) || !isTensor(rows) || !Array.isArray(present)) {
    throw typeError(`${asked}'s answer`, '{ source: Tensor, rows: Tensor, indices: number[] }', answer);
  }
  if (owned !== undefined && typeof owned !== 'boolean') throw typeError(`${asked}'s owned`, 'a boolean or undefined', owned);
  for (const [name, t] of [['source', source], ['rows', rows]] as const) {
    if (t.disposed) throw typeError(`${asked}'s ${name}`, 'a live Tensor', 'a disposed one'); // its shape read as "tensor was disposed"
  }
  const wanted = new Set(indices);
  for (const i of present) {
    if (!wanted.delete(i)) throw rangeError(`${asked}'s indices`, 'some of the indices asked, each once', i);
  }
  if (rows.shape[0] !== present.length) throw rangeError(`${asked}'s rows`, `one per index present (${present.length})`, `${rows.shape[0]} rows`);
  // Checked natively too, but named there as the sampler's ("rows must be in [0, 2)"), not as this answer's.
  const [n, , , channels] = source.shape;
  if (source.dtype !== 'uint8' || source.device !== 'cpu' || source.shape.length !== 4 || (channels !== 1 && channels !== 3)) {
    throw typeError(`${asked}'s source`, 'a uint8 N×H×W×C CPU tensor, C = 1 or 3', `${source.dtype} [${source.shape.join(', ')}] on ${source.device}`);
  }
  if (rows.dtype !== 'int64' || rows.shape.length !== 1) throw typeError(`${asked}'s rows`, 'a 1-D int64 tensor', `${rows.dtype} [${rows.shape.join(', ')}]`);
  for (const row of rows.data() as BigInt64Array) {
    if (row < 0n || row >= BigInt(n)) throw rangeError(`${asked}'s rows`, `rows of its source, in [0, ${n})`, Number(row));
  }
  return answer;
}

/** A data set's labels, one per sample, or null; errors name `arg`.labels. */
export function labelsOf(dataset: Dataset, arg = 'dataset'): Int32Array | null {
  const { labels } = dataset;
  if (labels === null || labels === undefined) return null;
  // A custom data set's array of [0, 0.5, 'a'] scored kNN against labels 0 and 0.
  if (!(labels instanceof Int32Array)) throw typeError(`${arg}.labels`, 'an Int32Array (one label per sample) or null', labels);
  if (labels.length !== dataset.length) {
    throw rangeError(`${arg}.labels`, `one label per sample (${dataset.length})`, `${labels.length} labels`);
  }
  return checkLabels(`${arg}.labels`, labels, dataset.length); // each label >= 0
}

/**
 * `value` as a Dataset: an object with batchSource(), an integer length, a label per sample (or none) and class names
 * fit for them (or none); errors name `arg` (a Subset of `{}` compared indices with an undefined length, and took them).
 */
export function checkDataset(arg: string, value: unknown): Dataset {
  if (typeof value !== 'object' || value === null || typeof (value as Dataset).batchSource !== 'function') {
    throw typeError(arg, 'a Dataset (ArrayDataset, IdxDataset, ImageFolder)', value);
  }
  const dataset = value as Dataset;
  checkInteger(`${arg}.length`, dataset.length, 0);
  checkClasses(`${arg}.classes`, dataset.classes ?? null, labelsOf(dataset, arg), `${arg}.labels`);
  return dataset;
}

/**
 * Sample indices of a data set of `length`: an array of integers in [0, length), each once (a sample twice in a batch
 * is two memory-bank updates of one row, and a Subset's position of it ambiguous); errors name `arg`.
 */
export function checkIndices(indices: unknown, length: number, arg = 'indices'): readonly number[] {
  if (!Array.isArray(indices)) throw typeError(arg, 'an array of sample indices', indices);
  // A byte per sample where the list is a good part of the data set: a Set of ImageNet's 1.28M took ~0.5 s, the bytes ~10 ms.
  const seen = length <= 64 * indices.length ? new Uint8Array(length) : null;
  const seenSet = seen ? null : new Set<number>();
  for (let k = 0; k < indices.length; k++) {
    const i: unknown = indices[k];
    if (typeof i !== 'number' || !Number.isInteger(i)) throw typeError(arg, `integers in [0, ${length})`, i);
    if (i < 0 || i >= length) throw rangeError(arg, `integers in [0, ${length})`, i);
    if (seen ? seen[i] : seenSet!.has(i)) throw rangeError(`${arg}[${k}]`, `a sample not already at ${arg}[${indices.indexOf(i)}] (each sample once)`, i);
    if (seen) seen[i] = 1;
    else seenSet!.add(i);
  }
  return indices as number[];
}

/** Labels given for `n` samples: an Int32Array of one label >= 0 each (a negative one was refused later, as another argument), or null. */
function checkLabels(arg: string, labels: unknown, n: number): Int32Array | null {
  if (labels === null || labels === undefined) return null;
  if (!(labels instanceof Int32Array) || labels.length !== n) throw typeError(arg, `an Int32Array of ${n} labels`, labels);
  const bad = labels.findIndex((label) => label < 0);
  if (bad >= 0) throw rangeError(`${arg}[${bad}]`, 'a label >= 0', labels[bad]);
  return labels;
}

/**
 * Class names by label: distinct strings, a name for each label up to the largest in `labels` (named `labelsArg`), or
 * null; errors name `arg`. A string was kept whole, and matched as a substring where the class names were compared.
 */
export function checkClasses(arg: string, classes: unknown, labels: Int32Array | null, labelsArg: string): string[] | null {
  if (classes === null || classes === undefined) return null;
  if (!Array.isArray(classes)) throw typeError(arg, 'an array of class names', classes);
  const first = new Map<string, number>();
  classes.forEach((name: unknown, i) => {
    if (typeof name !== 'string') throw typeError(`${arg}[${i}]`, 'a class name (a string)', name);
    if (first.has(name)) throw rangeError(`${arg}[${i}]`, `a name other than ${arg}[${first.get(name)}]'s (each class once)`, name);
    first.set(name, i);
  });
  let largest = -1; // a loop: spreading 10^5 labels into Math.max overflows the stack
  for (const label of labels ?? []) largest = Math.max(largest, label);
  if (classes.length <= largest) {
    throw rangeError(arg, `at least ${largest + 1} class names (one for each label up to the largest of ${labelsArg}, ${largest})`, classes);
  }
  return classes as string[];
}

/** The samples `indices` of `base`, numbered 0…n−1 in that order (a held-out split). */
export class Subset implements Dataset {
  readonly labels: Int32Array | null;
  private readonly position: Map<number, number>;

  readonly indices: readonly number[];

  constructor(readonly base: Dataset, indices: readonly number[]) {
    checkDataset('base', base);
    this.indices = [...checkIndices(indices, base.length)]; // a copy: the caller's array changed later would change the split unchecked
    this.labels = base.labels ? Int32Array.from(this.indices, (i) => base.labels![i]) : null;
    this.position = new Map(this.indices.map((i, k) => [i, k]));
  }

  get length(): number {
    return this.indices.length;
  }

  get classes(): string[] | null {
    return this.base.classes;
  }

  async batchSource(indices: readonly number[]): Promise<BatchSource> {
    checkIndices(indices, this.length);
    const source = await this.base.batchSource(indices.map((i) => this.indices[i]));
    return { ...source, indices: source.indices.map((i) => this.position.get(i)!) };
  }
}

/**
 * @internal Each sample's place among the images its folder lists, where they differ (a cache leaves the unreadable
 * ones out of the samples): a split by place holds out the same images of a folder with a cache as without.
 */
export const LISTED_PLACES = Symbol('pirl.listedPlaces');

/**
 * A deterministic split for evaluating on data that has no test set: every `every`-th sample (the
 * last of each group of `every`) is held out, so a folder sorted by class is split within each class. A folder's
 * samples count by their place in its listing, so that its unreadable images left out by a cache move no other.
 */
export function holdOut(dataset: Dataset, every = 5): { train: Subset; test: Subset } {
  checkDataset('dataset', dataset);
  // Every 1st would leave nothing to train on; fewer samples than `every`, nothing to test.
  if (dataset.length < 2) throw rangeError('dataset', 'at least 2 samples (one to train on, one held out)', dataset.length);
  checkInteger('every', every, 2);
  if (every > dataset.length) throw rangeError('dataset', `a data set of at least ${every} samples (to hold out every ${every}th)`, `${dataset.length} samples`);
  const places = (dataset as { [LISTED_PLACES]?: () => readonly number[] | null })[LISTED_PLACES]?.() ?? null;
  const all = Array.from({ length: dataset.length }, (_, i) => i);
  const heldOut = (i: number) => (places?.[i] ?? i) % every === every - 1;
  const test = all.filter(heldOut);
  if (test.length === 0 || test.length === dataset.length) {
    throw rangeError('dataset', `a data set with readable images both among those held out (every ${every}th of its folder) and among the others`, `${test.length} of its ${dataset.length} held out`);
  }
  return { train: new Subset(dataset, all.filter((i) => !heldOut(i))), test: new Subset(dataset, test) };
}

/** Images already in memory: one uint8 buffer of N×H×W×C (C = 1 or 3), copied once into native memory (as Tensor.from). */
export class ArrayDataset implements Dataset {
  readonly source: Tensor;
  readonly labels: Int32Array | null;
  readonly classes: string[] | null;

  constructor(images: Uint8Array, shape: readonly [number, number, number, number], options: { labels?: Int32Array | null; classes?: string[] | null } = {}) {
    if (!(images instanceof Uint8Array)) throw typeError('images', 'a Uint8Array or Buffer', images);
    if (!Array.isArray(shape) || shape.length !== 4) throw typeError('shape', '[N, H, W, C]', shape);
    const [n, h, w, c] = shape.map((d, i) => checkInteger(`shape[${i}]`, d, i === 0 ? 0 : 1));
    if (c !== 1 && c !== 3) throw rangeError('shape[3]', '1 (gray) or 3 (RGB) channels', c);
    if (n * h * w * c !== images.length) throw rangeError('images', `${n * h * w * c} bytes for shape [${shape.join(', ')}]`, images.length);
    checkOptions('options', options, ['labels', 'classes']);
    const labels = checkLabels('options.labels', options.labels, n);
    const classes = checkClasses('options.classes', options.classes, labels, 'options.labels');
    this.source = Tensor.from(images, [n, h, w, c]);
    this.labels = labels;
    this.classes = classes && [...classes]; // a copy, as the labels are checked against it
  }

  get length(): number {
    return this.source.shape[0];
  }

  async batchSource(indices: readonly number[]): Promise<BatchSource> {
    checkIndices(indices, this.length);
    return { source: this.source, rows: int64Tensor(indices), indices: [...indices] };
  }
}

// The file of argument `arg`: a regular file only (a FIFO's read waited forever, /dev/zero's read 2 GiB).
async function readMaybeGzipped(arg: string, file: string): Promise<Buffer> {
  const handle = await openRegular(file, () => rangeError(arg, 'a regular file (not a FIFO, a device or a folder)', file));
  let bytes: Buffer;
  try {
    bytes = await handle.readFile();
  } finally {
    await handle.close();
  }
  return bytes[0] === 0x1f && bytes[1] === 0x8b ? gunzip(bytes) : bytes;
}

function parseIdx(bytes: Buffer, file: string, dims: number): { shape: number[]; data: Buffer } {
  if (bytes.length < 4 + 4 * dims || bytes.readUInt16BE(0) !== 0 || bytes[2] !== 0x08 || bytes[3] !== dims) {
    throw new TypeError(`${file}: not an IDX file of unsigned bytes with ${dims} dimension(s)`);
  }
  const shape = Array.from({ length: dims }, (_, i) => bytes.readUInt32BE(4 + 4 * i));
  // Said of the file here: as the data set's shape it was "shape[1] must be …", which named no file.
  if (shape.slice(1).includes(0)) throw new RangeError(`${file}: IDX header says ${shape.join('×')}: an image side of 0`);
  const size = shape.reduce((a, b) => a * b, 1);
  const start = 4 + 4 * dims;
  if (bytes.length - start !== size) {
    throw new RangeError(`${file}: IDX header says ${shape.join('×')} = ${size} bytes, the file holds ${bytes.length - start}`);
  }
  return { shape, data: bytes.subarray(start) };
}

const FASHION_MNIST_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];
export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

/** (Fashion-)MNIST-style IDX files, gzipped or not. */
export class IdxDataset extends ArrayDataset {
  static async open(imagesFile: string, labelsFile?: string | null, classes?: string[] | null): Promise<IdxDataset> {
    checkFile('imagesFile', imagesFile);
    if (labelsFile !== undefined && labelsFile !== null) checkFile('labelsFile', labelsFile);
    const images = parseIdx(await readMaybeGzipped('imagesFile', imagesFile), imagesFile, 3);
    let labels: Int32Array | null = null;
    if (labelsFile !== undefined && labelsFile !== null) {
      const parsed = parseIdx(await readMaybeGzipped('labelsFile', labelsFile), labelsFile, 1);
      if (parsed.shape[0] !== images.shape[0]) {
        throw new RangeError(`${labelsFile}: ${parsed.shape[0]} labels for ${images.shape[0]} images`);
      }
      labels = Int32Array.from(parsed.data);
    }
    checkClasses('classes', classes, labels, 'labelsFile'); // named as this function's argument, not as options.classes
    const [n, h, w] = images.shape;
    return new IdxDataset(images.data, [n, h, w, 1], { labels, classes });
  }

  /** Fashion-MNIST from Debian's dataset-fashion-mnist (or `dir`). */
  static async fashionMnist(split: 'train' | 'test' = 'train', dir = FASHION_MNIST_DIR): Promise<IdxDataset> {
    checkOneOf('split', split, ['train', 'test'] as const);
    const prefix = split === 'train' ? 'train' : 't10k';
    const file = (kind: string) => path.join(dir, `${prefix}-${kind}-idx${kind === 'images' ? 3 : 1}-ubyte.gz`);
    try {
      await fs.access(file('images'));
    } catch {
      throw new Error(`Fashion-MNIST not found in ${dir}: install it with apt-get install dataset-fashion-mnist`);
    }
    return IdxDataset.open(file('images'), file('labels'), FASHION_MNIST_CLASSES);
  }
}
