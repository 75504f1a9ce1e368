// `pirl embed`: features of every image of a folder, with the file list in the metadata.
import { promises as fs } from 'fs';
import * as path from 'path';

import { EVAL_SIZE, resolveFeatureOptions } from '../config';
import { ImageFolder, relativeTo } from '../data/imageFolder';
import { folderFeatures, weightsDigest, type ReusableFeatures } from '../eval/embed';
import { datasetFeatures, featureOptionsFor } from '../eval/knn';
import { PirlModel } from '../model';
import { UsageError, applyRunFlags, asFlags, imagesFound, openData, optionsFromFlags, outputFile, parseFlags, warnOfSize, type Flags } from './args';
import { readFeaturesFile, readFeaturesMade, writeFeaturesFile } from '../eval/featuresFile';
import { Progress } from './progress';

const FEATURE_FLAGS = { layer: 'layer', size: 'size' };
export const EMBED_FLAGS: Flags = { values: ['out', 'layout', 'max-pixels', 'cache', 'device', 'threads', ...Object.keys(FEATURE_FLAGS)], switches: ['force', 'update', 'recursive'] };

export const EMBED_USAGE = `embed <model> <data> --out FILE [--update] [--force] [--layer res5|f] [--size N (the model's training size, else ${EVAL_SIZE})] [--layout auto|flat|classes] [--recursive] [--max-pixels N] [--cache FILE] [--device cpu|cuda] [--threads N]
                                features of every image, with the file list (or sample numbers) in the metadata (pirl search reads it);
                                --update: the rows of --out's images unchanged since it was written are kept, only new and changed
                                images embedded (all of them where --out was made by another model, layer or side: said);
                                --force: --out may replace a model or checkpoint; --cache: the folder's images decoded at this side, for
                                later passes (a file of its own: pirl train's is at another side)`;

type Resolved = ReturnType<typeof featureOptionsFor>;

// --update's rows to keep: --out's, where this model made them at this side and layer (else none, and why), each named
// by its file in the folder embedded now (a folder moved keeps its rows; a copy's files have new change times).
async function reusable(out: string, dir: string, weights: string, options: Resolved): Promise<ReusableFeatures | null> {
  if (!(await fs.stat(out).catch(() => null))) {
    console.error(`pirl: --update: ${out} is not there yet: every image is embedded`);
    return null;
  }
  const refused = (err: Error): never => {
    throw new UsageError(`--update ${out}: ${err.message}`);
  };
  // Told from the header alone: a catalogue's rows (gigabytes) are read only where they will be kept.
  const made = await readFeaturesMade(out).catch(refused);
  const differs = made.weights === null ? 'by an older pirl, which did not record its model' : made.weights !== weights ? 'by another model'
    : made.layer !== options.layer ? `at layer ${made.layer}, not ${options.layer}`
    : made.size !== options.size ? `${made.size === null ? 'at a side it did not record' : `at ${made.size} px`}, not ${options.size}` : null;
  const old = differs === null ? await readFeaturesFile(out).catch(refused) : null;
  if (old === null || old.versions === null) {
    console.error(`pirl: --update: ${out} was embedded ${differs ?? "without its files' versions (of a list of images, of fashion-mnist, or by an older pirl)"}: every image is embedded again`);
    return null;
  }
  return { features: old.features, files: old.names.map((f) => path.join(dir, f)), dir, size: options.size, layer: old.layer, weights, versions: old.versions };
}

export async function embed(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, EMBED_FLAGS, 2, 'embed needs <model.safetensors> <data>');
  if (typeof values.out !== 'string') throw new UsageError('embed needs --out FILE.safetensors');
  const [modelFile, spec] = positionals;
  if (values.update === true && spec === 'fashion-mnist') throw new UsageError("--update keeps the rows of a folder's unchanged images: fashion-mnist is no folder");
  const out = await outputFile(values.out, '.safetensors', { inputs: [modelFile, ...(typeof values.cache === 'string' ? [values.cache] : [])], force: values.force === true });
  const flags = asFlags(values, FEATURE_FLAGS, 'options', () => resolveFeatureOptions(optionsFromFlags(values, FEATURE_FLAGS)));
  const { device } = applyRunFlags(values);
  const model = await PirlModel.load(modelFile, { device });
  const weights = await weightsDigest(model); // of the model loaded, not of what the file holds once the work is done
  const options = asFlags(values, FEATURE_FLAGS, 'options', () => featureOptionsFor(model, flags));
  warnOfSize(model, options.size);
  const reuse = values.update === true ? await reusable(out, spec, weights, options) : null;
  const data = await openData(spec, Math.max(options.size, 8), values);
  const counted = new Progress().images('features');
  // A folder's rows are named by their files, with their versions (for a later --update); fashion-mnist's by their sample numbers.
  const pass = data instanceof ImageFolder
    ? await folderFeatures(model, data, options, counted, reuse)
    : { ...(await datasetFeatures(model, data, options, counted)), versions: null, reused: 0 };
  const { features, indices, versions, reused } = pass;
  const relative = data instanceof ImageFolder ? relativeTo(data.dir) : null;
  const names = indices.map((i) => (data instanceof ImageFolder ? relative!(data.files[i]) : `${spec}/train/${i}`));
  // Labeled data: each row's class beside it, for a classifier of the features (LinearProbe.fit) without the folder.
  const { labels, classes } = data;
  await writeFeaturesFile(out, {
    features, names, layer: options.layer, size: options.size, weights, versions, ...(data instanceof ImageFolder ? { dir: path.resolve(spec) } : {}),
    ...(labels && classes ? { labels: Int32Array.from(indices, (i) => labels[i]), classes } : {}),
  });
  const unreadable = imagesFound(data) - names.length; // a cache left some out of the data set, the passes the others
  const kept = values.update === true ? `; ${reused} kept from before, ${names.length - reused} embedded now` : '';
  console.log(`wrote ${features.shape.join('×')} features of ${names.length} images (at ${options.size} px${kept}${unreadable > 0 ? `; ${unreadable} unreadable left out` : ''}) to ${out}`);
}
