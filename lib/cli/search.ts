// `pirl search`: the images of a features file (`pirl embed`'s) most similar to query images, each query
// embedded as the file's images were (its model, layer and side).
import { promises as fs } from 'fs';
import * as path from 'path';

import { embedImages } from '../eval/embed';
import { nearestNeighbours } from '../eval/knn';
import { checkInteger } from '../errors';
import { PirlModel } from '../model';
import { readSafetensors } from '../safetensors';
import { Tensor } from '../tensor';
import { UsageError, applyRunFlags, checkFlag, fileDigest, parseFlags } from './args';

export const SEARCH_USAGE = `search <model> <features> <image|folder>... [--k 5] [--device cpu|cuda] [--threads N]
                                the k images of <features> (pirl embed's file, made with <model>) most like each query:
                                one JSON line per query, its neighbours' files and cosine similarities, best first`;

interface Catalogue {
  features: Tensor;
  files: string[];
  layer: 'res5' | 'f';
  size: number;
}

// What `pirl embed` wrote, checked: a file of another kind, or of another model, would give meaningless neighbours.
async function readCatalogue(file: string, model: string): Promise<Catalogue> {
  const { tensors, metadata } = await readSafetensors(file);
  const features = tensors.get('features');
  if (!features || metadata.files === undefined || metadata.layer === undefined) {
    throw new UsageError(`${file} is not a features file of pirl embed (it has no 'features' tensor and file list): make one with pirl embed <model> <folder> --out FILE`);
  }
  if (metadata['model-sha256'] !== undefined && metadata['model-sha256'] !== (await fileDigest(model))) {
    throw new UsageError(`${file} was embedded by another model than ${model}: search with the model that made it, or embed the images again with this one`);
  }
  const dir = metadata.dir;
  const files = (JSON.parse(metadata.files) as string[]).map((f) => (dir === undefined ? f : path.join(dir, f)));
  const size = metadata.size === undefined ? NaN : Number(metadata.size);
  if (!Number.isInteger(size)) throw new UsageError(`${file} does not say the side its images were embedded at (a file of an older pirl embed): embed them again`);
  return { features, files, layer: metadata.layer as Catalogue['layer'], size };
}

export async function search(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, ['k', 'device', 'threads'], [], { atLeast: 3 }, 'search needs <model.safetensors> <features.safetensors> and at least one query image or folder');
  const k = checkFlag(values, 'k', 5, (a, v) => checkInteger(a, v, 1));
  const { device } = applyRunFlags(values);
  const [modelFile, featuresFile, ...queries] = positionals;
  const catalogue = await readCatalogue(featuresFile, modelFile);
  const model = await PirlModel.load(modelFile, { device });
  const options = { layer: catalogue.layer, size: catalogue.size };
  // Folders one by one, the files named together: one pass each.
  const kinds = await Promise.all(queries.map(async (q) => ((await fs.stat(q).catch(() => null))?.isDirectory() ? 'folder' : 'file')));
  const files = queries.filter((_, i) => kinds[i] === 'file');
  const embedded = [
    ...(files.length > 0 ? [await embedImages(model, files, options)] : []),
    ...(await Promise.all(queries.filter((_, i) => kinds[i] === 'folder').map((folder) => embedImages(model, folder, options)))),
  ];
  for (const { features, files: named } of embedded) {
    const { indices, similarities } = await nearestNeighbours(catalogue.features, features, k);
    const rows = indices.data() as BigInt64Array, scores = similarities.data() as Float32Array;
    const width = indices.shape[1];
    named.forEach((query, q) => {
      const neighbours = Array.from({ length: width }, (_, j) => ({ file: catalogue.files[Number(rows[q * width + j])], similarity: scores[q * width + j] }));
      console.log(JSON.stringify({ query, neighbours }));
    });
  }
}
