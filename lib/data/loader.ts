// Batches of PIRL's two views, made by native threads ahead of the training step (a bounded
// number in flight), in a shuffled order that depends only on (seed, epoch).
import { binding, type LanesHandle } from '../binding';
import { MAX_IMAGE_SIDE, PRESETS, folderImageSize, resolveLoaderOptions, type Device, type LoaderOptions, type SamplerConfig } from '../config';
import { checkInteger, checkObject, nativeCall, rangeError, typeError } from '../errors';
import { Tensor, disposeAll, int64Tensor } from '../tensor';
import { checkDataset, sourceOf, type BatchSource, type Dataset } from './datasets';

export interface PirlBatch {
  /** B×3×S×S, normalised. */
  images: Tensor;
  /** B×9×3×P×P, normalised, in the order of `permutations`. */
  patches: Tensor;
  /** B×9: patch k comes from cell permutations[b][k] of the 3×3 grid (row-major). */
  permutations: Tensor;
  /** B dataset indices: the memory-bank rows. */
  indices: Tensor;
  /** Labels of the batch where the data set has them. */
  labels: Int32Array | null;
  /** The epoch it was drawn for, from 0. */
  epoch: number;
  /** Its place in that epoch, from 0 (BatchLogs.step counts the run's steps instead). */
  step: number;
}

// 32 bits, as config.ts's seeds: the order below takes an epoch's low 32 bits (2^32 repeated epoch 0's order, and
// 1.5 or 'x' took another's) while the native augmentations took all 64.
const MAX_EPOCH = 2 ** 32 - 1;

/** An epoch the Loader can tell from every other: an integer in [0, 2^32 − 1]. */
function checkEpoch(epoch: unknown): number {
  return checkInteger('epoch', epoch, 0, MAX_EPOCH);
}

// sfc32, seeded from (seed, epoch): a fast, well-mixed 32-bit generator for the epoch's order.
function orderGenerator(seed: number, epoch: number): () => number {
  let a = seed >>> 0, b = epoch >>> 0, c = 0x9e3779b9, d = 1;
  const next = () => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
  for (let i = 0; i < 16; i++) next();
  return next;
}

/**
 * Images stored at half the sampler's views or less train on blur: every view upscaled 2× or more (a folder
 * opened at a small size, CIFAR under the paper's 224-px views). Said once per loader, not refused.
 */
function warnOfUpscaledViews(shape: readonly number[], c: SamplerConfig): void {
  const side = Math.min(shape[1], shape[2]), view = Math.max(c.imageSize, c.jigsawSize);
  if (side * 2 > view) return;
  process.emitWarning(`the data set's images are ${shape[1]}×${shape[2]} px and the sampler's views ${c.imageSize} px (jigsaw crops ${c.jigsawSize}): ` +
    `each view is upscaled ${Math.floor(view / side)}× or more, a blur to train on. Store the images at ${folderImageSize(c)} px ` +
    `(ImageFolder's size, pirl train --size)${c.imageSize > PRESETS.small.imageSize ? ", or take the sampler for small images (the 'small' preset)" : ''}`,
  { code: 'PIRL_UPSCALED_VIEWS' });
}

export class Loader {
  readonly config: SamplerConfig;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly dropLast: boolean;
  readonly epochLength: number | null;
  readonly seed: number;
  readonly prefetch: number;
  private readonly lanes: LanesHandle;
  // Frees the batch memory kept for reuse once no epoch has started for a second after the last ended.
  private trimTimer: ReturnType<typeof setTimeout> | undefined;
  readonly pinMemory: boolean;
  readonly device: Device;
  readonly shard: { rank: number; count: number };
  private sideChecked = false;
  // The batches made and not yet disposed, unreported to V8: V8 collects as the memory reported grows by ~64 MB, and a
  // report of each (67 MB at B=64 of the paper preset) started collections though fit disposes each after its step.
  private unreported: Array<WeakRef<Tensor>> = [];

  constructor(readonly dataset: Dataset, options: LoaderOptions = {}) {
    if (checkDataset('dataset', dataset).length === 0) throw new RangeError('dataset is empty: nothing to train on');
    const o = resolveLoaderOptions(options);
    this.batchSize = o.batchSize;
    this.shuffle = o.shuffle;
    this.dropLast = o.dropLast;
    this.epochLength = o.epochLength;
    this.seed = o.seed;
    this.prefetch = o.prefetch;
    this.config = o.config;
    this.pinMemory = o.pinMemory;
    if (this.pinMemory && !binding.buildInfo().cudaAvailable) {
      throw rangeError('options.pinMemory', 'false where no CUDA device is usable (pinned memory serves copies to a GPU)', true);
    }
    this.device = o.device;
    this.shard = o.shard;
    if (this.dropLast && dataset.length < this.globalBatchSize) {
      const count = this.shard.count, ranks = count > 1 ? ` over ${count} ranks` : '';
      throw rangeError('options.batchSize', `at most ${Math.floor(dataset.length / count)} (the data set's ${dataset.length} samples${ranks}: dropLast drops incomplete batches, so a larger batch leaves none)`, this.batchSize);
    }
    this.lanes = new binding.LanesHandle(this.prefetch);
  }

  /** The samples of one step over all ranks: batchSize · shard.count. */
  get globalBatchSize(): number {
    return this.batchSize * this.shard.count;
  }

  /** How many batches an epoch has: the same for every epoch (and every rank). */
  get batchesPerEpoch(): number {
    const n = this.dataset.length;
    const full = this.dropLast ? Math.floor(n / this.globalBatchSize) : Math.ceil(n / this.globalBatchSize);
    return this.epochLength === null ? full : Math.min(full, this.epochLength);
  }

  /** The dataset indices of each of this rank's batches of `epoch`, in order. */
  batchesOf(epoch: number): number[][] {
    checkEpoch(epoch);
    const order = Array.from({ length: this.dataset.length }, (_, i) => i);
    if (this.shuffle) {
      const random = orderGenerator(this.seed, epoch);
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1));
        [order[i], order[j]] = [order[j], order[i]];
      }
    }
    const batches: number[][] = [];
    const global = this.globalBatchSize, mine = this.shard.rank * this.batchSize;
    for (let begin = 0; begin < order.length; begin += global) {
      const batch = order.slice(begin + mine, Math.min(begin + global, begin + mine + this.batchSize));
      if ((batch.length < this.batchSize || begin + global > order.length) && this.dropLast) break;
      batches.push(batch);
    }
    return this.epochLength === null ? batches : batches.slice(0, this.epochLength);
  }

  /** Makes one batch (exposed for previews and tests). */
  async makeBatch(indices: readonly number[], epoch: number, step = 0): Promise<PirlBatch> {
    checkEpoch(epoch);
    checkInteger('step', step, 0); // it picks the lane: -1 was refused as "lane must be in [0, 2)"
    // An empty batch was made, and refused by the step as "batch and k must be >= 1", arguments never given.
    if (Array.isArray(indices) && indices.length === 0) throw rangeError('indices', 'at least one sample index', indices);
    const answer = await sourceOf(this.dataset, indices);
    const { source, rows, indices: present } = answer;
    if (!this.sideChecked) warnOfUpscaledViews(source.shape, this.config);
    this.sideChecked = true;
    const ids = int64Tensor(present);
    // Batch `step` on lane step mod prefetch: the batches in flight each on a thread of their own.
    const lane = step % this.prefetch;
    const out = await inputsFreed(answer, () => nativeCall(() => binding.makeBatch(source.handle, rows.handle, ids.handle, this.seed, epoch, this.config, this.pinMemory, this.device, this.lanes, lane)));
    const labels = this.dataset.labels ? Int32Array.from(present, (i) => this.dataset.labels![i]) : null;
    const batch = { images: new Tensor(out.images), patches: new Tensor(out.patches), permutations: new Tensor(out.permutations), indices: ids, labels, epoch, step };
    this.reportIfLeft([batch.images, batch.patches, batch.permutations]);
    return batch;
  }

  // More batches undisposed than are ever in use at once (those in flight, the step's, the next) are kept or left
  // to the collector by their consumer: reported now, so that it frees those dropped.
  private reportIfLeft(made: Tensor[]): void {
    this.unreported = this.unreported.filter((r) => !(r.deref()?.disposed ?? true));
    this.unreported.push(...made.map((t) => new WeakRef(t)));
    if (this.unreported.length <= made.length * (this.prefetch + 2)) return;
    for (const r of this.unreported) r.deref()?.handle.report();
    this.unreported = [];
  }

  /** The batches of one epoch; `prefetch` of them are being made while the consumer works. */
  epoch(epoch: number): AsyncGenerator<PirlBatch> {
    return this.epochFrom(epoch, 0);
  }

  /** The batches of `epoch` from its batch number `first` on (a resumed run). */
  async *epochFrom(epoch: number, first: number): AsyncGenerator<PirlBatch> {
    checkEpoch(epoch);
    checkInteger('first', first, 0);
    const batches = this.batchesOf(epoch);
    clearTimeout(this.trimTimer);
    const inFlight: Array<Promise<PirlBatch>> = [];
    let next = first;
    const fill = () => {
      while (inFlight.length < this.prefetch && next < batches.length) {
        const promise = this.makeBatch(batches[next], epoch, next);
        promise.catch(() => undefined); // surfaced when awaited below, not as an unhandled rejection
        inFlight.push(promise);
        next++;
      }
    };
    fill();
    try {
      while (inFlight.length > 0) {
        const batch = await inFlight.shift()!;
        fill();
        if (batch.indices.shape[0] > 0) yield batch;
        else disposeBatch(batch); // a batch of only unreadable files is skipped
      }
    } finally {
      // Ended early (a break, a stop, an error): the batches made ahead were never handed out, and are freed as they come.
      for (const promise of inFlight) promise.then(disposeBatch, () => undefined);
      this.trimTimer = setTimeout(() => this.lanes.trimBuffers(), 1000).unref();
    }
  }

  [Symbol.asyncIterator](): AsyncGenerator<PirlBatch> {
    return this.epoch(0);
  }
}

/** The evaluation transform for kNN and probes: whole images resized, normalised, no augmentation. */
export async function evalImages(dataset: Dataset, indices: readonly number[], size: number): Promise<{ images: Tensor; indices: number[] }> {
  const out = await evalBatch(dataset, indices, size);
  out.images.handle.report(); // the caller's to keep, or to leave to the collector
  return out;
}

/**
 * @internal evalImages for a caller that disposes the images once used (datasetFeatures): unreported to V8, which
 * collects when the memory reported grows by ~64 MB — a batch of 512 images at 224 px is 308 MB.
 */
export async function evalBatch(dataset: Dataset, indices: readonly number[], size: number): Promise<{ images: Tensor; indices: number[] }> {
  const s = checkInteger('size', size, 1, MAX_IMAGE_SIDE); // 60,000 px was 43 GB an image
  const answer = await sourceOf(dataset, indices);
  const { source, rows, indices: present } = answer;
  return { images: new Tensor(await inputsFreed(answer, () => nativeCall(() => binding.evalImages(source.handle, rows.handle, s)))), indices: present };
}

/** `work`'s result; an owned source (BatchSource.owned) disposed once it is done, whatever its outcome. */
async function inputsFreed<T>(answer: BatchSource, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } finally {
    if (answer.owned) disposeAll([answer.source, answer.rows]);
  }
}

/**
 * Disposes a batch's tensors (fit does once its step has run): each holds a batch of pixels, on the GPU
 * too, which the garbage collector would otherwise free when it next ran — a collection every few steps.
 */
export function disposeBatch(batch: PirlBatch): void {
  const b = checkObject('batch', batch);
  const tensors = (['images', 'patches', 'permutations', 'indices'] as const).map((key) => {
    if (!(b[key] instanceof Tensor)) throw typeError(`batch.${key}`, 'a Tensor (a batch from a Loader)', b[key]);
    return b[key] as Tensor;
  });
  disposeAll(tensors);
}
