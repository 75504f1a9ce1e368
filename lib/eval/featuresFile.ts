// The features file of `pirl embed`: rows of features, each named by its image, with what made them (the model's
// weights, the layer, the side) and each file's version then. One owner of the format: embed writes it, and reads it
// back for --update; search reads it; saveImageFeatures and loadImageFeatures keep an embedImages pass in it.
import * as path from 'path';

import { EMBED_LAYERS, MAX_IMAGE_SIDE, type EmbedLayer } from '../config';
import { VERSION_FIELDS, relativeTo, type FileVersion } from '../data/imageFolder';
import { checkInteger, checkOneOf, rangeError, typeError } from '../errors';
import type { ImageFeatures } from './embed';
import { checkFeatureRows, rowsAtOnce } from './rows';
import { parsedMetadata, readSafetensors, readSafetensorsMetadata, writeSafetensors } from '../safetensors';
import { Tensor } from '../tensor';

/** What made a features file's rows, as its metadata says. */
export interface FeaturesMade {
  layer: EmbedLayer;
  /** The side embedded at; null in a file of an older pirl, which did not say. */
  size: number | null;
  /** SHA-256 of the weights of the model that made the rows (weightsDigest); null in a file of an older pirl. */
  weights: string | null;
}

export interface FeaturesFile extends FeaturesMade {
  features: Tensor;
  /** Each row's image: relative to `dir` for a folder's (fashion-mnist: 'fashion-mnist/train/i'). */
  names: string[];
  /** The folder embedded, absolute; undefined for fashion-mnist's samples. */
  dir?: string;
  /** Each row's file as it was when embedded (null: not known), which --update compares; null for fashion-mnist and older files. */
  versions: Array<FileVersion | null> | null;
  /** Labeled data: each row's class, and the class names. */
  labels?: Int32Array;
  classes?: string[];
}

/** A features file as read: its labels and classes read (and checked) only where they are used (search and --update use none). */
export interface FeaturesRead extends Omit<FeaturesFile, 'labels' | 'classes'> {
  readClasses: () => { labels: Int32Array | null; classes: string[] | null };
}

// Each row's [bytes, modification time, change time] (times in ms) as float64 (exact there), NaN for a file that could not be looked at.
const VERSIONS = 'file-versions';

const notFeatures = (file: string) => new Error(`${file} is not a features file of pirl embed (it has no 'features' tensor and file list): make one with pirl embed <model> <folder> --out FILE`);

// The metadata's account of the rows (whether a model can embed at its side is the model's to say).
function madeOf(file: string, metadata: Record<string, string>): FeaturesMade {
  if (metadata.files === undefined || metadata.layer === undefined) throw notFeatures(file);
  const layer = checkOneOf(`${file}: metadata "layer"`, metadata.layer, EMBED_LAYERS);
  const size = metadata.size === undefined ? null : checkInteger(`${file}: metadata "size"`, /^\d+$/.test(metadata.size) ? Number(metadata.size) : metadata.size, 1, MAX_IMAGE_SIDE);
  return { layer, size, weights: metadata['model-weights-sha256'] ?? null };
}

/** What made `file`'s rows, read from its header alone (a catalogue's features may be gigabytes). */
export async function readFeaturesMade(file: string): Promise<FeaturesMade> {
  return madeOf(file, await readSafetensorsMetadata(file));
}

/** `file` as pirl embed wrote it, checked: a file of another kind, or a broken row, would give meaningless neighbours. */
export async function readFeaturesFile(file: string): Promise<FeaturesRead> {
  const { tensors, metadata } = await readSafetensors(file);
  const features = tensors.get('features');
  if (!features || features.shape.length !== 2) throw notFeatures(file);
  const made = madeOf(file, metadata);
  if (features.dtype !== 'float32' && features.dtype !== 'float64') throw new Error(`${file}: its 'features' must be float32 or float64 rows, got ${features.dtype}`);
  const rows = features.shape[0];
  const dir = metadata.dir;
  const names = parsedMetadata(file, metadata, 'files');
  if (!Array.isArray(names) || names.length !== rows || names.some((f) => typeof f !== 'string')) {
    throw new Error(`${file}: metadata "files" must name the ${rows} images of its rows`);
  }
  // pirl embed names each image under its folder: a name that climbs out of it (or an absolute one) is not its work,
  // and would be printed as a neighbour — a path a service might then serve.
  const outside = (names as string[]).findIndex((f) => dir !== undefined && (path.isAbsolute(f) || f.split(/[\\/]/).includes('..')));
  if (outside >= 0) throw new Error(`${file}: metadata "files"[${outside}] (${JSON.stringify(names[outside])}) names a file outside its folder ${dir}: embed the images again`);
  const row = firstNonFiniteRow(features);
  if (row >= 0) throw new Error(`${file}: the features of row ${row} (${names[row]}) are not finite: embed the images again (a model that makes NaN is broken)`);
  return {
    features, names: names as string[], dir, ...made, versions: versionsOf(file, tensors.get(VERSIONS), rows), readClasses: () => classesOf(file, tensors.get('labels'), metadata, rows),
  };
}

/** The first row of `features` (2-D) holding NaN or infinity, or -1; read in parts (a catalogue's pass a typed array cannot hold). */
function firstNonFiniteRow(features: Tensor): number {
  const [rows, width] = features.shape;
  for (let start = 0, chunk = rowsAtOnce(features); start < rows; start += chunk) {
    const broken = (features.rows(start, Math.min(chunk, rows - start)).data() as Float32Array).findIndex((v) => !Number.isFinite(v));
    if (broken >= 0) return start + Math.floor(broken / width);
  }
  return -1;
}

// Labeled data's rows: each one's class, of the names in metadata "classes".
function classesOf(file: string, labels: Tensor | undefined, metadata: Record<string, string>, rows: number): { labels: Int32Array | null; classes: string[] | null } {
  const classes = parsedMetadata(file, metadata, 'classes');
  if (labels === undefined && classes === undefined) return { labels: null, classes: null };
  if (!Array.isArray(classes) || classes.length === 0 || classes.some((c) => typeof c !== 'string')) throw new Error(`${file}: metadata "classes" must name the classes of its 'labels'`);
  if (labels === undefined || labels.dtype !== 'int32' || labels.shape.length !== 1 || labels.shape[0] !== rows) {
    throw new Error(`${file}: its 'labels' must be int32 of shape [${rows}] (each row's class), got ${labels ? `${labels.dtype} [${labels.shape.join(', ')}]` : 'none'}`);
  }
  const values = labels.data() as Int32Array;
  const bad = values.findIndex((l) => l < 0 || l >= classes.length);
  if (bad >= 0) throw new Error(`${file}: its 'labels'[${bad}] must be a class of the ${classes.length} in metadata "classes", got ${values[bad]}`);
  return { labels: Int32Array.from(values), classes: classes as string[] }; // a copy: the file's tensor is not kept
}

function versionsOf(file: string, stored: Tensor | undefined, rows: number): Array<FileVersion | null> | null {
  if (stored === undefined) return null;
  const width = VERSION_FIELDS.length;
  if (stored.dtype !== 'float64' || stored.shape.length !== 2 || stored.shape[0] !== rows || stored.shape[1] !== width) {
    throw new Error(`${file}: its '${VERSIONS}' must be float64 of shape [${rows}, ${width}] (each row's file size, modification and change time), got ${stored.dtype} [${stored.shape.join(', ')}]`);
  }
  const v = stored.data() as Float64Array;
  return Array.from({ length: rows }, (_, i) => (Number.isNaN(v[width * i]) ? null : { bytes: v[width * i], modifiedMs: v[width * i + 1], changedMs: v[width * i + 2] }));
}

export async function writeFeaturesFile(out: string, content: FeaturesFile): Promise<void> {
  const { features, names, dir, layer, size, weights, versions, labels, classes } = content;
  const tensors: Array<[string, Tensor]> = [['features', features]];
  if (labels) tensors.push(['labels', Tensor.from(labels)]);
  if (versions) {
    const width = VERSION_FIELDS.length;
    const v = new Float64Array(versions.length * width); // filled in place: ten million rows' flatMap held 30 million numbers twice
    versions.forEach((version, i) => VERSION_FIELDS.forEach((k, j) => (v[width * i + j] = version?.[k] ?? NaN)));
    tensors.push([VERSIONS, Tensor.from(v, [versions.length, width])]);
  }
  await writeSafetensors(out, tensors, {
    files: JSON.stringify(names), layer, ...(size === null ? {} : { size: String(size) }), ...(weights === null ? {} : { 'model-weights-sha256': weights }),
    ...(dir === undefined ? {} : { dir }), ...(classes ? { classes: JSON.stringify(classes) } : {}),
  });
}

/**
 * An embedImages pass kept in a file of `pirl embed`'s format (pirl search and pirl embed --update read it; a
 * folder's rows named relative to it); what loadImageFeatures gives back is a `reuse` for a later pass.
 */
export async function saveImageFeatures(file: string, pass: ImageFeatures): Promise<void> {
  if (typeof pass !== 'object' || pass === null || !Array.isArray(pass.files)) throw typeError('pass', 'an ImageFeatures (what embedImages gives)', pass);
  // What loadImageFeatures would refuse is refused here, before a file is written.
  const rows = checkFeatureRows('pass.features', pass.features).shape[0];
  const perRow = (arg: string, value: { length: number } | null) => {
    if (value && value.length !== rows) throw rangeError(`${arg}.length`, `${rows}, one entry per row of pass.features`, value.length);
  };
  perRow('pass.files', pass.files);
  perRow('pass.labels', pass.labels);
  perRow('pass.versions', pass.versions);
  const row = firstNonFiniteRow(pass.features);
  if (row >= 0) throw new RangeError(`pass.features must hold finite rows: row ${row} (${pass.files[row]}) holds NaN or infinity`);
  const relative = pass.dir === null ? null : relativeTo(pass.dir);
  await writeFeaturesFile(file, {
    features: pass.features, names: relative ? pass.files.map(relative) : pass.files, ...(pass.dir === null ? {} : { dir: path.resolve(pass.dir) }),
    layer: pass.layer, size: pass.size, weights: pass.weights, versions: pass.versions, ...(pass.labels && pass.classes ? { labels: pass.labels, classes: pass.classes } : {}),
  });
}

/** A features file of `pirl embed` (or saveImageFeatures) as the embedImages pass it keeps: `files` under its folder, no failures. */
export async function loadImageFeatures(file: string): Promise<ImageFeatures> {
  const { features, names, dir, layer, size, weights, versions, readClasses } = await readFeaturesFile(file);
  if (size === null) throw new Error(`${file} does not record the side its images were embedded at (an older pirl embed): embed them again`);
  return {
    features, files: dir === undefined ? names : names.map((n) => path.join(dir, n)), ...readClasses(), failures: new Map(),
    size, layer, dir: dir ?? null, weights, versions, reused: 0,
  };
}
