// Evaluation of a trunk's features: NPID's weighted kNN (k=200, τ=0.07) on features recomputed with
// the test transform (docs/PIRL.md, "Evaluation protocols").
import { binding, type StopHandle } from '../binding';
import {
  EVAL_SIZE, resolveFeatureOptions, resolveKnnOptions, resolveLinearProbeOptions, type EmbedLayer, type FeatureOptions, type KnnOptions, type LinearProbeOptions,
  type ResolvedLinearProbeOptions,
} from '../config';
import { checkDataset, labelsOf, type Dataset } from '../data/datasets';
import { evalBatch } from '../data/loader';
import { checkInteger, checkOptions, nativeCall, rangeError, typeError } from '../errors';
import { checkModel, type PirlModel } from '../model';
import { Tensor, disposeAll, int64Tensor } from '../tensor';
import { LinearProbe } from './linearProbe';
import { checkLabels, checkSearch } from './rows';
import { stoppable, throwIfAborted } from './stop';

export type { FeatureOptions, KnnOptions, LinearProbeOptions };

export interface DatasetFeatures {
  /** One row per sample kept, in data set order. */
  features: Tensor;
  /** The data set index of each row (undecodable images are left out). */
  indices: number[];
  /** Their labels, where the data set has labels. */
  labels: Int32Array | null;
}

/** Told how many samples of a feature pass are done, of how many: 0 as it begins, then after each batch. */
export type FeatureProgress = (done: number, total: number) => void;

/**
 * `options` decided for `model`: the side it was trained at unless given (else EVAL_SIZE), checked against its
 * stem, and a batch that suits that side (PirlModel.embedBatchSize) unless given.
 */
export function featureOptionsFor(model: PirlModel, options: FeatureOptions = {}, arg = 'options'): { size: number; batchSize: number; layer: EmbedLayer; signal: AbortSignal | null } {
  checkModel('model', model);
  const o = resolveFeatureOptions(options, arg);
  const size = o.size ?? model.imageSize ?? EVAL_SIZE;
  if (size < model.minInputSize) throw rangeError(`${arg}.size`, `at least ${model.minInputSize} px for model.stem '${model.options.stem}'`, size);
  throwIfAborted(o.signal); // before the work: a cache built, N×F features zeroed
  return { size, batchSize: o.batchSize ?? model.embedBatchSize(size), layer: o.layer, signal: o.signal };
}

// Checked before the pass: a callback that is not one would fail after the first batch's work.
function checkProgress(onProgress: unknown): void {
  if (onProgress !== undefined && typeof onProgress !== 'function') throw typeError('onProgress', 'a function', onProgress);
}

/** `work` with a reference of its own to `model`: its calls end even if the model is disposed meanwhile (a service swapping models). */
export async function retained<T>(model: PirlModel, work: (own: PirlModel) => Promise<T>): Promise<T> {
  checkModel('model', model);
  const own = model.retain();
  try {
    return await work(own);
  } finally {
    own.dispose();
  }
}

/**
 * Features of a data set with the eval transform, one batch at a time, with the data set index of
 * each row. The model runs on its own device; the features come back on the CPU.
 */
export async function* featureBatches(model: PirlModel, dataset: Dataset, options: FeatureOptions = {}, onProgress?: FeatureProgress): AsyncGenerator<{ features: Tensor; indices: number[] }> {
  const { size, batchSize, layer, signal } = featureOptionsFor(model, options);
  checkDataset('dataset', dataset);
  checkProgress(onProgress);
  const own = model.retain(); // as retained(): a generator cannot await work in a callback
  try {
    onProgress?.(0, dataset.length); // the pass begins: a progress clock made earlier starts here
    for (let begin = 0; begin < dataset.length; begin += batchSize) {
      throwIfAborted(signal);
      const wanted = Array.from({ length: Math.min(batchSize, dataset.length - begin) }, (_, i) => begin + i);
      const { images, indices } = await evalBatch(dataset, wanted, size);
      let features: Tensor | null = null;
      try {
        if (indices.length > 0) features = await own.embed(images, { layer, batchSize });
      } finally {
        images.dispose(); // embedded: its pixels freed now, not at a collection they would start
      }
      onProgress?.(begin + wanted.length, dataset.length);
      if (features) yield { features, indices };
    }
    throwIfAborted(signal); // asked during the last batch: the caller's work after the pass does not start
  } finally {
    own.dispose();
  }
}

/** Pooled res5 features (or the f embedding) of a whole data set with the eval transform, batch by batch, on the CPU. */
export async function datasetFeatures(model: PirlModel, dataset: Dataset, options: FeatureOptions = {}, onProgress?: FeatureProgress): Promise<DatasetFeatures> {
  const width = model.widthOf(featureOptionsFor(model, options).layer);
  checkDataset('dataset', dataset);
  checkProgress(onProgress); // before N×width zeros
  const known = labelsOf(dataset);
  // Each batch is copied into its rows as it comes: the features are held once (ImageNet's res5: 9.8 GiB, which
  // zeros would have filled on the JavaScript thread; every row kept is written).
  const all = Tensor.empty([dataset.length, width]);
  const indices: number[] = [];
  try {
    for await (const batch of featureBatches(model, dataset, options, onProgress)) {
      (all.rows(indices.length, batch.indices.length).data() as Float32Array).set(batch.features.data() as Float32Array);
      batch.features.dispose();
      indices.push(...batch.indices);
    }
  } catch (err) {
    all.dispose(); // a pass stopped or failed: ImageNet's res5 features are 9.8 GiB
    throw err;
  }
  const labels = known ? Int32Array.from(indices, (i) => known[i]) : null;
  // Unreadable images leave their rows out (N×width even when nothing could be read: 0×width).
  return { features: indices.length === dataset.length ? all : all.rows(0, indices.length), indices, labels };
}

async function labeledFeatures(model: PirlModel, dataset: Dataset, options: FeatureOptions, onProgress?: FeatureProgress): Promise<{ features: Tensor; labels: Int32Array }> {
  const { features, labels } = await datasetFeatures(model, dataset, options, onProgress);
  return { features, labels: labels! };
}

/**
 * kNN search: the k rows of `features` (N×F) most cosine-similar to each query (M×F), most similar
 * first — M×k int64 row numbers and M×k float32 similarities, on the CPU. k is clamped to N. It runs
 * where `features` are (a CUDA device too); `queries` must be there as well. `options.signal` stops it between
 * chunks of 256 queries.
 */
export async function nearestNeighbours(features: Tensor, queries: Tensor, k: number, options: { signal?: AbortSignal | null } = {}): Promise<{ indices: Tensor; similarities: Tensor }> {
  const [f, q] = checkSearch(features, queries);
  const kk = checkInteger('k', k, 1);
  const { signal } = resolveFeatureOptions(checkOptions('options', options, ['signal']));
  const out = await stoppable(signal, 'the kNN search', (stop) => nativeCall(() => binding.nearestNeighbours(f.handle, q.handle, kk, stop)));
  return { indices: new Tensor(out.index), similarities: new Tensor(out.similarity) };
}

/** The labeled features of a train and a test set, their progress told as one pass over both. */
async function bothFeatures(model: PirlModel, train: Dataset, test: Dataset, options: FeatureOptions, onProgress?: FeatureProgress) {
  checkProgress(onProgress);
  // Both checked before either is embedded: an unlabeled test set used to fail after the train features.
  for (const [name, dataset] of [['train', train], ['test', test]] as const) {
    if (!checkDataset(name, dataset).labels) throw typeError(name, 'a labeled data set', 'unlabeled data');
  }
  const toTrainLabel = classAlignment(train, test);
  const total = train.length + test.length;
  const a = await labeledFeatures(model, train, options, onProgress && ((done) => onProgress(done, total)));
  const b = await labeledFeatures(model, test, options, onProgress && ((done) => done > 0 && onProgress(train.length + done, total))).catch((err) => {
    a.features.dispose();
    throw err;
  });
  // A score of no samples is no score (NaN); train's checked too: nothing to vote or to fit.
  for (const [name, set] of [['train', a], ['test', b]] as const) {
    if (set.labels.length === 0) {
      disposeAll([a.features, b.features]);
      throw rangeError(name, 'a data set with at least one readable sample', 'none readable');
    }
  }
  return [a, { features: b.features, labels: toTrainLabel ? b.labels.map((label) => toTrainLabel[label]) : b.labels }] as const;
}

/**
 * Test labels → train labels where both sets name their classes: a label is a class folder's place among
 * its set's folders, so a test folder with fewer (or other) classes numbers them differently. null: the
 * labels are taken as they are (no names, or the same names in the same order).
 */
function classAlignment(train: Dataset, test: Dataset): Int32Array | null {
  if (!train.classes || !test.classes) return null;
  const trainClasses = train.classes;
  if (test.classes.length === trainClasses.length && test.classes.every((c, i) => c === trainClasses[i])) return null;
  const unknown = test.classes.filter((c) => !trainClasses.includes(c));
  if (unknown.length > 0) {
    throw rangeError('test', `a data set of train's classes (${trainClasses.join(', ')})`, unknown);
  }
  return Int32Array.from(test.classes, (c) => trainClasses.indexOf(c));
}

// Labels run from 0, so the classes are the largest label + 1 (a loop: spreading 10^5 labels into Math.max overflows the stack).
function classCount(...labels: Int32Array[]): number {
  let max = -1;
  for (const set of labels) for (const label of set) max = Math.max(max, label);
  return max + 1;
}

/**
 * Weighted-kNN labels of `queries` (M×F): the k rows of `features` (N×F, labelled by `labels`) most
 * cosine-similar to each query vote e^{s/τ} for their label (NPID's classifier; `pirl eval`'s). It runs where
 * `features` are; `queries` must be there too. `options.signal` stops it between chunks of 256 queries.
 */
export async function knnPredict(features: Tensor, labels: Int32Array, queries: Tensor, options: { k?: number; tau?: number; signal?: AbortSignal | null } = {}): Promise<Int32Array> {
  const [f, q] = checkSearch(features, queries);
  checkLabels(labels, f.shape[0]);
  const { k, tau, signal } = resolveKnnOptions(checkOptions('options', options, ['k', 'tau', 'signal']));
  const predict = (stop: StopHandle | null) => nativeCall(() => binding.knnPredict(f.handle, int64Tensor(labels).handle, q.handle, k, tau, classCount(labels), stop));
  const predicted = new Tensor(await stoppable(signal, 'the kNN search', predict)).data() as BigInt64Array;
  return Int32Array.from(predicted, Number);
}

type Labeled = { features: Tensor; labels: Int32Array };

// The share of test labels predicted.
const top1 = (predicted: Int32Array, labels: Int32Array) => predicted.reduce((correct, p, i) => correct + (p === labels[i] ? 1 : 0), 0) / labels.length;

// The kNN protocol on computed features: on the model's device.
async function knnTop1(model: PirlModel, a: Labeled, b: Labeled, k: number, tau: number, signal: AbortSignal | null): Promise<number> {
  const onDevice = await Promise.all([a.features.to(model.device), b.features.to(model.device)]);
  try {
    return top1(await knnPredict(onDevice[0], a.labels, onDevice[1], { k, tau, signal }), b.labels);
  } finally {
    disposeAll(onDevice); // a GPU's copies (on the CPU, handles of the same memory)
  }
}

// Both sets' features, freed once `work` is done with them (ImageNet's res5: 9.8 GiB), not at a collection.
async function freeingFeatures<T>(sets: readonly Labeled[], work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } finally {
    disposeAll(sets.map((s) => s.features));
  }
}

// The linear-probe protocol on computed features.
async function linearProbeTop1(a: Labeled, b: Labeled, probe: Omit<ResolvedLinearProbeOptions, 'size'>): Promise<number> {
  const classifier = await LinearProbe.fit(a.features, a.labels, { ...probe, numClasses: classCount(a.labels, b.labels) });
  return top1(await classifier.predict(b.features), b.labels);
}

/**
 * Weighted-kNN top-1 accuracy of `model`'s trunk: train features vote for test samples. The
 * similarities are computed on the model's device.
 */
export async function knnAccuracy(model: PirlModel, train: Dataset, test: Dataset, options: KnnOptions = {}, onProgress?: FeatureProgress): Promise<number> {
  const { k, tau, ...features } = resolveKnnOptions(options);
  return retained(model, async (own) => {
    const sets = await bothFeatures(own, train, test, features, onProgress);
    return freeingFeatures(sets, () => knnTop1(own, ...sets, k, tau, features.signal));
  });
}

/** Top-1 of a linear probe (LinearProbe) trained on the frozen pooled features of `model`'s trunk over `train`, on `test`. */
export async function linearProbeAccuracy(model: PirlModel, train: Dataset, test: Dataset, options: LinearProbeOptions = {}, onProgress?: FeatureProgress): Promise<number> {
  const { size, ...probe } = resolveLinearProbeOptions(options);
  const sets = await retained(model, (own) => bothFeatures(own, train, test, { size, signal: probe.signal }, onProgress));
  return freeingFeatures(sets, () => linearProbeTop1(...sets, probe));
}

/**
 * Both protocols from one feature pass over each set (`pirl eval --linear-probe`): the kNN top-1 with
 * `options.knn`, and the probe's with `options.linearProbe` (trained on the same features; null: not run).
 */
export async function evaluateTrunk(
  model: PirlModel, train: Dataset, test: Dataset, options: { knn?: KnnOptions; linearProbe?: Omit<LinearProbeOptions, 'size' | 'signal'> | null } = {}, onProgress?: FeatureProgress,
): Promise<{ knnTop1: number; linearProbeTop1: number | null }> {
  checkOptions('options', options, ['knn', 'linearProbe']);
  const { k, tau, ...features } = resolveKnnOptions(options.knn ?? {}, 'options.knn');
  // The probe takes options.knn's features: of its options, those of its training.
  const given = options.linearProbe ?? null;
  // One signal stops the whole evaluation: the passes, the kNN and the probe's training.
  if (given !== null && typeof given === 'object' && 'signal' in given) throw typeError('options.linearProbe.signal', 'left out: options.knn.signal stops the passes, the kNN and the probe', (given as { signal: unknown }).signal);
  const probe = given === null ? null : resolveLinearProbeOptions(checkOptions('options.linearProbe', given, ['epochs', 'batchSize', 'lr', 'weightDecay', 'seed']), 'options.linearProbe');
  return retained(model, async (own) => {
    const sets = await bothFeatures(own, train, test, features, onProgress);
    return freeingFeatures(sets, async () => {
      const knn = await knnTop1(own, ...sets, k, tau, features.signal);
      if (!probe) return { knnTop1: knn, linearProbeTop1: null };
      throwIfAborted(features.signal, 'the evaluation'); // asked as the kNN ended: the probe's training does not start
      const { size: _size, ...fit } = probe; // the passes took options.knn's
      return { knnTop1: knn, linearProbeTop1: await linearProbeTop1(...sets, { ...fit, signal: features.signal }) };
    });
  });
}
