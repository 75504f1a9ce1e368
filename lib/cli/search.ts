// `pirl search`: the images of a features file (`pirl embed`'s) most similar to query images, each query
// embedded as the file's images were (its model, layer and side).
import { promises as fs } from 'fs';
import * as path from 'path';

import type { EmbedLayer } from '../config';
import { AmbiguousLayoutError, ImageFolder, unopenable, type FolderLayout } from '../data/imageFolder';
import { embedImages, weightsDigest, type ImageFeatures } from '../eval/embed';
import { featureOptionsFor, nearestNeighbours } from '../eval/knn';
import { checkInteger, errorFrom } from '../errors';
import { PirlModel } from '../model';
import type { Tensor } from '../tensor';
import { UsageError, applyRunFlags, checkFlag, layoutFlag, maxPixelsOption, parseFlags, warnOfSize, type Flags } from './args';
import { readFeaturesFile } from '../eval/featuresFile';
import { Progress } from './progress';

export const SEARCH_FLAGS: Flags = { values: ['k', 'layout', 'max-pixels', 'device', 'threads'], switches: ['recursive'] };
export const SEARCH_USAGE = `search <model> <features> <image|folder>... [--k 5] [--layout auto|flat|classes] [--recursive] [--max-pixels N] [--device cpu|cuda] [--threads N]
                                the k images of <features> (pirl embed's file, made with <model>) most like each query:
                                one JSON line per query image, in the order given — its neighbours' files (a folder's: absolute paths)
                                and cosine similarities, best first, or the error that left it out`;

interface Catalogue {
  features: Tensor;
  files: string[];
  layer: EmbedLayer;
  size: number;
}

// What `pirl embed` wrote, checked against the model: rows of another model, or of another width, would give meaningless neighbours.
async function readCatalogue(file: string, modelFile: string, model: PirlModel): Promise<Catalogue> {
  const { features, names, dir, layer, size: stored, weights } = await readFeaturesFile(file);
  if (features.shape[0] === 0) throw new Error(`${file}: its 'features' hold no row (an embed of no image): nothing to search`);
  // (Files of pirl before 0.1's weights digest held their model file's, which no longer tells: their width is checked below.)
  if (weights !== null && weights !== (await weightsDigest(model))) {
    throw new Error(`${file} was embedded by another model than ${modelFile}: search with the model that made it, or embed the images again with this one`);
  }
  if (weights === null) {
    console.error(`pirl: warning: ${file} does not record the model that made it (a list's pass saved without its weights, or an older pirl's file): ` +
      `its rows are taken as ${modelFile}'s, checked by their width alone (pirl embed records the model)`);
  }
  const width = model.widthOf(layer);
  if (features.shape[1] !== width) throw new Error(`${file} holds ${features.shape[1]} features per image, ${modelFile}'s ${layer} has ${width}: embed the images again with this model`);
  const files = names.map((f) => (dir === undefined ? f : path.join(dir, f)));
  // Moved or removed since: the neighbours still name the images where they were.
  if (dir !== undefined && !(await fs.stat(dir).then((s) => s.isDirectory(), () => false))) {
    console.error(`pirl: warning: ${file}'s images were embedded from ${dir}, which is no folder now: its neighbours are named where they were (embed the moved folder again)`);
  }
  const size = stored ?? sideOfOlderFile(file, model);
  if (size < model.minInputSize) throw new Error(`${file}: its side, ${size} px, is below the ${model.minInputSize} px that ${modelFile}'s stem '${model.options.stem}' takes: embed the images again with this model`);
  warnOfSize(model, size, `${file}'s side, ${size} px (its queries are embedded at it),`);
  return { features, files, layer, size };
}

// A features file of an older pirl embed does not say its side: that embed used the model's training side unless --size was given.
function sideOfOlderFile(file: string, model: PirlModel): number {
  const size = featureOptionsFor(model).size;
  console.error(`pirl: warning: ${file} does not record the side its images were embedded at (an older pirl embed): queries are embedded at ${size} px, the model's; embed again if it was made with another --size`);
  return size;
}

// A query folder's images in their order, listed (what its layout leaves out is said; none is decoded): each is then
// embedded, or given its error line. What leaves it no images stops the run (exit 1, as a missing file); an ambiguous
// layout is a flag's to settle (exit 2).
async function queryFolderImages(dir: string, layout: { layout: FolderLayout; recursive: boolean }): Promise<readonly string[]> {
  try {
    return await ImageFolder.list(dir, layout);
  } catch (err) {
    throw err instanceof AmbiguousLayoutError ? new UsageError(err.explain('--layout')) : errorFrom(`query ${(err as Error).message}`, err);
  }
}

export async function search(args: string[]): Promise<void | number> {
  const { values, positionals } = parseFlags(args, SEARCH_FLAGS, { atLeast: 3 }, 'search needs <model.safetensors> <features.safetensors> and at least one query image or folder');
  const k = checkFlag(values, 'k', 5, (a, v) => checkInteger(a, v, 1));
  const layout = layoutFlag(values);
  const decoding = maxPixelsOption(values);
  const { device } = applyRunFlags(values);
  const [modelFile, featuresFile, ...queries] = positionals;
  const kinds = await Promise.all(queries.map(async (q) => {
    const stat = await fs.stat(q).catch((err: unknown) => errorFrom(`query ${q}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or folder' : (err as Error).message}`, err));
    if (stat instanceof Error) throw stat;
    if (!stat.isDirectory() && !stat.isFile()) throw new Error(`query ${q}: neither an image file nor a folder`);
    return stat.isDirectory() ? 'folder' : 'file';
  }));
  const model = await PirlModel.load(modelFile, { device });
  const catalogue = await readCatalogue(featuresFile, modelFile, model);
  // kNN lists the k nearest of what there is: said, so that a shorter list is not taken for a fault.
  if (k > catalogue.files.length) console.error(`pirl: --k ${k}${values.k === undefined ? ' (the default)' : ''} is more than the ${catalogue.files.length} images of ${featuresFile}: each query lists all ${catalogue.files.length}`);
  // Every query folder opened before any line is printed: one without images stops the run before it begins.
  const folderImages = new Map<string, readonly string[]>();
  for (const [i, query] of queries.entries()) if (kinds[i] === 'folder') folderImages.set(query, await queryFolderImages(query, layout));
  const progress = new Progress();
  // Each query's line (its neighbours, or why it was left out), by file.
  let answered = 0;
  const lines = async (embedded: ImageFeatures): Promise<Map<string, string>> => {
    const out = new Map<string, string>();
    answered += embedded.features.shape[0];
    if (embedded.features.shape[0] > 0) {
      const { indices, similarities } = await nearestNeighbours(catalogue.features, embedded.features, k);
      const width = indices.shape[1];
      const rows = indices.data() as BigInt64Array, scores = similarities.data() as Float32Array;
      embedded.files.forEach((file, q) => {
        const neighbours = Array.from({ length: width }, (_, j) => ({ file: catalogue.files[Number(rows[q * width + j])], similarity: scores[q * width + j] }));
        out.set(file, JSON.stringify({ query: path.resolve(file), neighbours }));
      });
    }
    for (const [file, error] of embedded.failures) out.set(file, JSON.stringify({ query: path.resolve(file), error }));
    return out;
  };
  // Every query image in its place (a folder's as listed above, not probed again), answered a feature batch at a time:
  // the first lines come at once, and a stop keeps those printed.
  const images = queries.flatMap((query, i) => (kinds[i] === 'file' ? [query] : folderImages.get(query)!));
  const chunk = model.embedBatchSize(catalogue.size);
  const counted = progress.images('query images');
  for (let start = 0; start < images.length; start += chunk) {
    const batch = images.slice(start, start + chunk);
    // A folder's file that cannot be opened by its name (a link to nothing, a name not UTF-8) is an error line, as an
    // undecodable one is, not the end of the search.
    const problems = await unopenable(batch);
    const openable = batch.filter((_, j) => problems[j] === null);
    const found = openable.length === 0 ? new Map<string, string>() : await lines(await embedImages(model, openable, {
      layer: catalogue.layer, size: catalogue.size, ...decoding, onProgress: (done: number) => counted(start + done, images.length),
    }));
    batch.forEach((file, j) => console.log(found.get(file) ?? JSON.stringify({ query: path.resolve(file), error: problems[j]?.why ?? 'not embedded' })));
    counted(start + batch.length, images.length); // the unopenable ones too: the count reaches its total
  }
  // Every query an error line: a script reading the exit status alone would have taken them for answers.
  if (answered === 0) {
    console.error('pirl: no query image could be embedded (see their error lines)');
    return 1;
  }
}
