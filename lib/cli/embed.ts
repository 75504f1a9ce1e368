// `pirl embed`: features of every image of a folder, with the file list in the metadata.
import * as path from 'path';

import { EVAL_SIZE, resolveFeatureOptions } from '../config';
import { ImageFolder, relativeTo } from '../data/imageFolder';
import { datasetFeatures, featureOptionsFor } from '../eval/knn';
import { PirlModel } from '../model';
import { writeSafetensors } from '../safetensors';
import { Tensor } from '../tensor';
import { UsageError, applyRunFlags, asFlags, imagesFound, openData, optionsFromFlags, outputFile, parseFlags, warnOfSize, weightsDigest, type Flags } from './args';
import { Progress } from './progress';

const FEATURE_FLAGS = { layer: 'layer', size: 'size' };
export const EMBED_FLAGS: Flags = { values: ['out', 'layout', 'max-pixels', 'cache', 'device', 'threads', ...Object.keys(FEATURE_FLAGS)], switches: ['force'] };

export const EMBED_USAGE = `embed <model> <data> --out FILE [--force] [--layer res5|f] [--size N (the model's training size, else ${EVAL_SIZE})] [--layout auto|flat|classes] [--max-pixels N] [--cache FILE] [--device cpu|cuda] [--threads N]
                                features of every image, with the file list (or sample numbers) in the metadata (pirl search reads it);
                                --force: --out may replace a model or checkpoint; --cache: the folder's images decoded at this side, for
                                later passes (a file of its own: pirl train's is at another side)`;

export async function embed(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, EMBED_FLAGS, 2, 'embed needs <model.safetensors> <data>');
  if (typeof values.out !== 'string') throw new UsageError('embed needs --out FILE.safetensors');
  const out = await outputFile(values.out, '.safetensors', { inputs: [positionals[0], ...(typeof values.cache === 'string' ? [values.cache] : [])], force: values.force === true });
  const flags = asFlags(values, FEATURE_FLAGS, 'options', () => resolveFeatureOptions(optionsFromFlags(values, FEATURE_FLAGS)));
  const { device } = applyRunFlags(values);
  const model = await PirlModel.load(positionals[0], { device });
  const modelDigest = await weightsDigest(model); // of the model loaded, not of what the file holds once the work is done
  const options = asFlags(values, FEATURE_FLAGS, 'options', () => featureOptionsFor(model, flags));
  warnOfSize(model, options.size);
  const data = await openData(positionals[1], Math.max(options.size, 8), values);
  const progress = new Progress();
  const { features, indices } = await datasetFeatures(model, data, options, progress.images('features'));
  // A folder's rows are named by their files; fashion-mnist's by their sample numbers.
  let files: string[];
  if (data instanceof ImageFolder) {
    const relative = relativeTo(data.dir);
    files = indices.map((i) => relative(data.files[i]));
  } else {
    files = indices.map((i) => `${positionals[1]}/train/${i}`);
  }
  // Labeled data: each row's class beside it, for a classifier of the features (LinearProbe.fit) without the folder.
  const { labels, classes } = data;
  const tensors: Array<[string, Tensor]> = [['features', features]];
  if (labels && classes) tensors.push(['labels', Tensor.from(Int32Array.from(indices, (i) => labels[i]))]);
  await writeSafetensors(out, tensors, {
    files: JSON.stringify(files), layer: options.layer, size: String(options.size), 'model-weights-sha256': modelDigest,
    ...(data instanceof ImageFolder ? { dir: path.resolve(positionals[1]) } : {}), ...(labels && classes ? { classes: JSON.stringify(classes) } : {}),
  });
  const unreadable = imagesFound(data) - files.length; // a cache left some out of the data set, the passes the others
  console.log(`wrote ${features.shape.join('×')} features of ${files.length} images (at ${options.size} px${unreadable > 0 ? `; ${unreadable} unreadable left out` : ''}) to ${out}`);
}
