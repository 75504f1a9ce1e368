// Features of image files as `pirl embed` makes them: each image decoded at the side it is embedded at (one
// resampling), every row named by its file — so that a query embeds as its catalogue did.
import { createHash } from 'crypto';
import { promises as fs } from 'fs';

import type { EmbedLayer, FeatureOptions } from '../config';
import { Subset } from '../data/datasets';
import { ImageFolder, VERSION_FIELDS, relativeTo, type FileVersion, type FolderLayout, type FolderWarning } from '../data/imageFolder';
import { checkArrayOf, checkFile, checkFunctions, checkObject, checkOptions, rangeError, typeError } from '../errors';
import type { PirlModel } from '../model';
import { Tensor, disposeAll } from '../tensor';
import { datasetFeatures, featureOptionsFor, retained, type FeatureProgress } from './knn';
import { checkFeatureRows, rowsAtOnce } from './rows';

export interface EmbedImagesOptions extends FeatureOptions {
  /** How a folder is read (ImageFolder.open's layout; default 'auto'). */
  layout?: FolderLayout;
  /** Images in a folder's subfolders at any depth too (ImageFolder.open's recursive; default false). */
  recursive?: boolean;
  /** A folder's images decoded at the side they are embedded at, kept in this file for later passes (ImageFolder.open's cache). */
  cache?: string;
  /** An image of more pixels is left out undecoded (ImageFolder's maxPixels; default sharp's 268,402,689). */
  maxPixels?: number;
  /** Told after each batch: images done, of all. */
  onProgress?: FeatureProgress;
  /** Called once per unreadable image, with its code (default: process.emitWarning; ImageFolder's codes). */
  onWarning?: (message: string, code: FolderWarning) => void;
  /**
   * An earlier pass of this folder by this model at this side and layer (its ImageFeatures): the rows of the files
   * unchanged since (the same name in the folder, size, modification and change time) are kept, and only the others
   * embedded. A folder only (the folder given by another path, or moved, too).
   */
  reuse?: ReusableFeatures;
}

export interface ImageFeatures {
  /** One row per readable image, in the order of `files`, on the CPU. */
  features: Tensor;
  /** The file of each row (an image given in memory: `images[i]`, its place in the list); unreadable images are left out (see `failures`). */
  files: string[];
  /** A folder of class subfolders: each row's label (its class's place in `classes`); else null. */
  labels: Int32Array | null;
  classes: string[] | null;
  /** Each unreadable image (named as in `files`), and why, in their order. */
  failures: ReadonlyMap<string, string>;
  /** The side the images were embedded at (the model's training side unless options.size). */
  size: number;
  layer: EmbedLayer;
  /** A folder's pass: the folder, as given (each of `files` is under it); null for a list. */
  dir: string | null;
  /**
   * A folder's pass: the SHA-256 (hex) of the model's weights and buffers (weightsDigest), which `reuse` and pirl search
   * compare. Null for a list (a request's uploads: the digest took ResNet-50 ten times a one-image pass); a list's pass
   * saved for pirl search records its model where set first: `{ ...pass, weights: await weightsDigest(model) }`.
   */
  weights: string | null;
  /** A folder's pass: each row's file as it was when read (null: it could not be looked at), which `reuse` compares; null for a list. */
  versions: Array<FileVersion | null> | null;
  /** The rows taken from options.reuse (the others were embedded now). */
  reused: number;
}

/** What options.reuse takes of an earlier pass (`pirl embed --update` reads it from its features file). */
export type ReusableFeatures = Pick<ImageFeatures, 'features' | 'files' | 'dir' | 'size' | 'layer' | 'weights' | 'versions'>;

const EMBED_IMAGES_OPTIONS = ['size', 'batchSize', 'layer', 'signal', 'layout', 'recursive', 'cache', 'maxPixels', 'onProgress', 'onWarning', 'reuse'] as const;

/**
 * The SHA-256 (hex) of a model's weights and buffers (names, dtypes, shapes, bytes): which model made a set of features.
 * Of the weights, not of a file: a run's checkpoint and its model file are one model (a file's digest told them apart).
 */
export async function weightsDigest(model: PirlModel): Promise<string> {
  const tensors = await model.stateDict('all');
  try {
    const hash = createHash('sha256');
    let since = 0; // bytes hashed since the event loop last ran: ResNet-50's 100 MB take 0.6 s, which a service's requests would wait for
    for (const name of [...tensors.keys()].sort()) {
      const t = tensors.get(name)!;
      const data = t.data();
      hash.update(`${name}\0${t.dtype}\0${t.shape.join(',')}\0`).update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      since += data.byteLength;
      if (since >= 2 ** 23) {
        since = 0;
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    return hash.digest('hex');
  } finally {
    disposeAll(tensors.values());
  }
}

type Resolved = ReturnType<typeof featureOptionsFor>;

// An earlier pass fit to reuse here: rows of this model's weights, side and layer, each named by its file and its version then.
function checkReuse(value: unknown, resolved: Resolved, width: number, weights: string): ReusableFeatures {
  const reuse = checkObject('options.reuse', value) as ReusableFeatures;
  if (typeof reuse.dir !== 'string') throw typeError('options.reuse.dir', "the folder of a folder's pass (a list's pass has none)", reuse.dir);
  if (!Array.isArray(reuse.versions)) throw typeError('options.reuse.versions', "the file versions of a folder's pass (a list's pass has none)", reuse.versions);
  if (reuse.layer !== resolved.layer) throw rangeError('options.reuse.layer', `'${resolved.layer}', the layer embedded now`, reuse.layer);
  if (reuse.size !== resolved.size) throw rangeError('options.reuse.size', `${resolved.size}, the side embedded at now`, reuse.size);
  if (reuse.weights !== weights) {
    const whose = reuse.weights === null ? " (null: a pass of a list, or a file of an older pirl, which did not record its model)" : '';
    throw rangeError('options.reuse.weights', `this model's (SHA-256 ${weights}): rows of another model's features mixed with its own would be silently wrong${whose}`, reuse.weights);
  }
  const [rows, columns] = checkFeatureRows('options.reuse.features', reuse.features).shape;
  if (columns !== width) throw rangeError('options.reuse.features', `rows of ${width} features (the layer's)`, reuse.features.shape);
  const files = checkArrayOf('options.reuse.files', reuse.files, checkFile);
  const versions = checkArrayOf('options.reuse.versions', reuse.versions, (arg, v) => {
    const version = v as FileVersion | null;
    if (version !== null && !VERSION_FIELDS.every((k) => Number.isFinite(version?.[k]))) throw typeError(arg, 'a file version ({ bytes, modifiedMs, changedMs }) or null', v);
    return version;
  });
  for (const [name, list] of [['files', files], ['versions', versions]] as const) {
    if (list.length !== rows) throw rangeError(`options.reuse.${name}.length`, `one per row of options.reuse.features (${rows})`, list.length);
  }
  return reuse;
}

/**
 * @internal A folder's features and each row's file version, the rows of `reuse` whose files are unchanged kept
 * (copied) and only the others embedded; in the folder's order.
 */
export async function folderFeatures(own: PirlModel, folder: ImageFolder, resolved: Resolved, onProgress?: FeatureProgress, reuse: ReusableFeatures | null = null)
  : Promise<{ features: Tensor; indices: number[]; versions: Array<FileVersion | null>; reused: number }> {
  const versions = await folder.versions(); // before the decodes (a cache's: as it checked them): a file changed during the pass is embedded again next time
  const kept = reuse ? unchangedRows(reuse, folder, versions) : new Map<number, number>();
  if (kept.size === 0) {
    const { features, indices } = await datasetFeatures(own, folder, resolved, onProgress);
    return { features, indices, versions: indices.map((i) => versions[i]), reused: 0 };
  }
  const todo = folder.files.map((_, i) => i).filter((i) => !kept.has(i));
  const fresh = todo.length > 0 ? await datasetFeatures(own, new Subset(folder, todo), resolved, onProgress) : null;
  const embedded = new Map(fresh?.indices.map((k, row) => [todo[k], row]));
  const indices = folder.files.map((_, i) => i).filter((i) => kept.has(i) || embedded.has(i));
  try {
    const features = Tensor.empty([indices.length, own.widthOf(resolved.layer)]);
    // Copied in runs of consecutive rows of one source (a call per row is ten million for a large folder), read in parts.
    const source = (i: number): [Tensor, number] => (kept.has(i) ? [reuse!.features, kept.get(i)!] : [fresh!.features, embedded.get(i)!]);
    const longest = rowsAtOnce(features);
    for (let start = 0; start < indices.length;) {
      const [from, row] = source(indices[start]);
      let end = start + 1;
      while (end < indices.length && end - start < longest) {
        const [next, at] = source(indices[end]);
        if (next !== from || at !== row + end - start) break;
        end++;
      }
      (features.rows(start, end - start).data() as Float32Array).set(from.rows(row, end - start).data() as Float32Array);
      start = end;
    }
    return { features, indices, versions: indices.map((i) => versions[i]), reused: kept.size };
  } finally {
    fresh?.features.dispose();
  }
}

// Folder index → row of `reuse`, for each file of the same name in its folder (given by any path) and the same version then,
// unless this pass already left it out (a lower maxPixels, found as the folder was opened).
function unchangedRows(reuse: ReusableFeatures, folder: ImageFolder, versions: ReadonlyArray<FileVersion | null>): Map<number, number> {
  const [then, now] = [relativeTo(reuse.dir!), relativeTo(folder.dir)];
  const before = new Map(reuse.files.map((file, row) => [then(file), row]));
  const kept = new Map<number, number>();
  folder.files.forEach((file, i) => {
    const row = folder.failures.has(file) ? undefined : before.get(now(file));
    const was = row === undefined ? null : reuse.versions![row];
    const is = versions[i];
    if (was && is && VERSION_FIELDS.every((k) => was[k] === is[k])) kept.set(i, row!);
  });
  return kept;
}

/**
 * Features of a folder of images (read as ImageFolder.open does) or of a list of image files and encoded images
 * in memory (Buffers: uploads; read in place, left unchanged until done with), each decoded at the side it is
 * embedded at: the side the model was trained at unless options.size says otherwise.
 */
export async function embedImages(model: PirlModel, images: string | readonly (string | Uint8Array)[], options: EmbedImagesOptions = {}): Promise<ImageFeatures> {
  checkFunctions('options', checkOptions('options', options, EMBED_IMAGES_OPTIONS), ['onProgress', 'onWarning']);
  const { layout, recursive, cache, maxPixels, onProgress, onWarning, reuse, ...given } = options;
  // (A list that is none is fromList's to refuse.)
  if (images === '') throw typeError('images', 'a folder path, or a non-empty array of image file paths or encoded images', images);
  for (const [name, value] of Object.entries({ layout, recursive })) {
    if (typeof images !== 'string' && value !== undefined) throw rangeError(`options.${name}`, 'left out for a list of files (it says how a folder is read)', value);
  }
  if (typeof images !== 'string' && cache !== undefined) throw rangeError('options.cache', "left out for a list of files (it keeps a folder's images)", cache);
  const resolved = featureOptionsFor(model, given);
  if (typeof images !== 'string' && reuse !== undefined) throw rangeError('options.reuse', "left out for a list of files (it keeps rows of a folder's unchanged files)", reuse);
  // How each image is decoded (ImageFolder's options, only those given).
  const decoding = { ...(maxPixels === undefined ? {} : { maxPixels }), ...(onWarning === undefined ? {} : { onWarning }) };
  // The model retained before the first await: a dispose() right after the call lets it finish, as documented.
  return retained(model, async (own) => {
    if (typeof images === 'string' && (await fs.stat(images).catch(() => null))?.isFile()) {
      throw rangeError('images', 'a folder, or an array of image files and encoded images (one file: [file])', images);
    }
    // A folder's pass says which model made it (for a later reuse, and a search against it): its weights read before its work.
    const weights = typeof images === 'string' ? await weightsDigest(own) : null;
    const reusable = reuse === undefined ? null : checkReuse(reuse, resolved, own.widthOf(resolved.layer), weights!);
    const folder = typeof images === 'string'
      ? await ImageFolder.open(images, { size: resolved.size, layout, recursive, cache, ...decoding })
      : await ImageFolder.fromList(images, 'images', { size: resolved.size, ...decoding });
    const pass = typeof images === 'string'
      ? folderFeatures(own, folder, resolved, onProgress, reusable)
      : datasetFeatures(own, folder, resolved, onProgress).then((r) => ({ ...r, versions: null, reused: 0 }));
    const { features, indices, versions, reused } = await pass.finally(() => folder.close());
    // In the images' order (their decodes end in any order; those a cache left out are in order, and have no place).
    const place = new Map(folder.files.map((file, i) => [file, i]));
    const failures = new Map([...folder.failures].sort(([a], [b]) => (place.get(a) ?? -1) - (place.get(b) ?? -1)));
    const labels = folder.labels && Int32Array.from(indices, (i) => folder.labels![i]);
    return {
      features, files: indices.map((i) => folder.files[i]), labels, classes: folder.classes, failures, size: resolved.size, layer: resolved.layer,
      dir: typeof images === 'string' ? folder.dir : null, weights, versions, reused,
    };
  });
}
