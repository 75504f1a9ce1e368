// Features of image files as `pirl embed` makes them: each image decoded at the side it is embedded at (one
// resampling), every row named by its file — so that a query embeds as its catalogue did.
import { promises as fs } from 'fs';

import type { FeatureOptions } from '../config';
import { ImageFolder, type FolderLayout, type FolderWarning } from '../data/imageFolder';
import { checkFunctions, checkOptions, rangeError, typeError } from '../errors';
import type { PirlModel } from '../model';
import type { Tensor } from '../tensor';
import { datasetFeatures, featureOptionsFor, retained, type FeatureProgress } from './knn';

export interface EmbedImagesOptions extends FeatureOptions {
  /** How a folder is read (ImageFolder.open's layout; default 'auto'). */
  layout?: FolderLayout;
  /** A folder's images decoded at the side they are embedded at, kept in this file for later passes (ImageFolder.open's cache). */
  cache?: string;
  /** An image of more pixels is left out undecoded (ImageFolder's maxPixels; default sharp's 268,402,689). */
  maxPixels?: number;
  /** Told after each batch: images done, of all. */
  onProgress?: FeatureProgress;
  /** Called once per unreadable image, with its code (default: process.emitWarning; ImageFolder's codes). */
  onWarning?: (message: string, code: FolderWarning) => void;
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
}

const EMBED_IMAGES_OPTIONS = ['size', 'batchSize', 'layer', 'signal', 'layout', 'cache', 'maxPixels', 'onProgress', 'onWarning'] as const;

/**
 * Features of a folder of images (read as ImageFolder.open does) or of a list of image files and encoded images
 * in memory (Buffers: uploads; read in place, left unchanged until done with), each decoded at the side it is
 * embedded at: the side the model was trained at unless options.size says otherwise.
 */
export async function embedImages(model: PirlModel, images: string | readonly (string | Uint8Array)[], options: EmbedImagesOptions = {}): Promise<ImageFeatures> {
  checkFunctions('options', checkOptions('options', options, EMBED_IMAGES_OPTIONS), ['onProgress', 'onWarning']);
  const { layout, cache, maxPixels, onProgress, onWarning, ...given } = options;
  // (A list that is none is fromList's to refuse.)
  if (images === '') throw typeError('images', 'a folder path, or a non-empty array of image file paths or encoded images', images);
  if (typeof images !== 'string' && layout !== undefined) throw rangeError('options.layout', 'left out for a list of files (it says how a folder is read)', layout);
  if (typeof images !== 'string' && cache !== undefined) throw rangeError('options.cache', "left out for a list of files (it keeps a folder's images)", cache);
  const resolved = featureOptionsFor(model, given);
  // How each image is decoded (ImageFolder's options, only those given).
  const decoding = { ...(maxPixels === undefined ? {} : { maxPixels }), ...(onWarning === undefined ? {} : { onWarning }) };
  // The model retained before the first await: a dispose() right after the call lets it finish, as documented.
  return retained(model, async (own) => {
    if (typeof images === 'string' && (await fs.stat(images).catch(() => null))?.isFile()) {
      throw rangeError('images', 'a folder, or an array of image files and encoded images (one file: [file])', images);
    }
    const folder = typeof images === 'string'
      ? await ImageFolder.open(images, { size: resolved.size, ...(layout === undefined ? {} : { layout }), ...(cache === undefined ? {} : { cache }), ...decoding })
      : await ImageFolder.fromList(images, 'images', { size: resolved.size, ...decoding });
    const { features, indices, labels } = await datasetFeatures(own, folder, resolved, onProgress).finally(() => folder.close());
    // In the images' order (their decodes end in any order; those a cache left out are in order, and have no place).
    const place = new Map(folder.files.map((file, i) => [file, i]));
    const failures = new Map([...folder.failures].sort(([a], [b]) => (place.get(a) ?? -1) - (place.get(b) ?? -1)));
    return { features, files: indices.map((i) => folder.files[i]), labels, classes: folder.classes, failures, size: resolved.size };
  });
}
