// What every `pirl` verb shares: flag parsing, flags mapped onto library options (so the library's
// checks in lib/config.ts and lib/errors.ts judge them, and their errors name the flag), and the data
// argument.
import { constants as fsConstants, promises as fs } from 'fs';
import * as path from 'path';
import { parseArgs } from 'util';

import { MAX_IMAGE_SIDE, folderImageSize, resolveRunOptions, type ResolvedRunOptions, type SamplerConfig } from '../config';
import { IdxDataset, holdOut, type Dataset } from '../data/datasets';
import { AmbiguousLayoutError, DEFAULT_LAYOUT, FOLDER_LAYOUTS, ImageFolder, SHARP_MAX_PIXELS, sampleFiles, type FolderLayout } from '../data/imageFolder';
import { checkInteger, checkObject, checkOneOf, errorFrom, isArgumentError, nearest } from '../errors';
import { makeFolder, openRegular, realPathOf } from '../folders';
import type { PirlModel } from '../model';
import { readSafetensorsMetadata } from '../safetensors';
import { setNumThreads } from '../runtime';
import { Progress } from './progress';
import { keptOnQuit } from './quit';

/** A command-line mistake: `pirl` prints it with the usage and exits 2. */
export class UsageError extends Error {}

export type FlagValues = Record<string, string | boolean | undefined>;

/** A verb's flags: those that take a value, and the switches (which take none). */
export interface Flags {
  readonly values: readonly string[];
  readonly switches: readonly string[];
}

/**
 * Parses `args` for a verb's `flags`; `count` positionals (described by `what` in the error) are required. A
 * negative number after a flag is its value.
 */
export function parseFlags(args: string[], flags: Flags, count: number | { atLeast: number }, what: string): { values: FlagValues; positionals: string[] } {
  const { values: strings, switches: booleans } = flags;
  const options: Record<string, { type: 'string' | 'boolean' }> = {};
  for (const name of strings) options[name] = { type: 'string' };
  for (const name of booleans) options[name] = { type: 'boolean' };
  // parseArgs reads `--lr -1` as two flags ("ambiguous"); `--lr=-1` is what was meant.
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--') {
      joined.push(...args.slice(i));
      break;
    }
    // parseArgs reads `-k` as --k (a flag of one letter), so that a file `-k.jpg` became --k=.jpg: pirl's flags take two dashes.
    const single = /^-([^-\d.][^=]*)/.exec(args[i]);
    if (single) {
      const near = closest(single[1], [...strings, ...booleans]);
      throw new UsageError(`unknown flag ${args[i]} (${near === null ? '' : `did you mean --${near}? `}pirl's flags take two dashes; a file named so: ./${args[i]}, or -- before it)`);
    }
    const flag = args[i].startsWith('--') ? args[i].slice(2) : '';
    const next = args[i + 1];
    if (strings.includes(flag) && next !== undefined && /^-\d|^-\.\d/.test(next)) joined.push(`${args[i]}=${args[++i]}`);
    else if (strings.includes(flag) && next !== undefined && /^-[^-]/.test(next)) {
      throw new UsageError(`${args[i]} ${next}: a value that starts with '-' is written ${args[i]}=${next} (or ${args[i]} misses its value)`);
    } else joined.push(args[i]);
  }
  let parsed;
  try {
    parsed = parseArgs({ args: joined, allowPositionals: true, options });
  } catch (err) {
    throw new UsageError(parseError((err as Error).message, [...strings, ...booleans]));
  }
  // An unset shell variable (`--out "$RUN"`) is an empty value: the run went to the current folder, a config unread.
  for (const [name, value] of Object.entries(parsed.values)) {
    if (value === '') throw new UsageError(`--${name} needs a value, got '' (an unset variable?)`);
  }
  const empty = parsed.positionals.indexOf('');
  if (empty >= 0) throw new UsageError(`argument ${empty + 1} is empty ('': an unset variable?)`);
  const n = parsed.positionals.length;
  if (typeof count === 'number' ? n !== count : n < count.atLeast) {
    // `--resume run/checkpoint.safetensors`: a switch given a value reads it as an argument, which the count alone hides.
    const switched = joined.findIndex((a, i) => booleans.includes(a.slice(2)) && a.startsWith('--') && i + 1 < joined.length && !joined[i + 1].startsWith('-'));
    const hint = switched < 0 || n <= (typeof count === 'number' ? count : count.atLeast) ? '' : `; ${joined[switched]} is a switch (it takes no value), so '${joined[switched + 1]}' is one of them`;
    throw new UsageError(`${what} (got ${n} argument(s)${n > 0 ? `: ${parsed.positionals.map((p) => `'${p}'`).join(', ')}` : ''}${hint})`);
  }
  return { values: parsed.values as FlagValues, positionals: parsed.positionals };
}

// parseArgs's refusals as pirl says them: its advice (`-- "--epoch"`) was about positionals, never what was meant.
function parseError(message: string, known: readonly string[]): string {
  const unknown = /^Unknown option '(-+)([^']*)'/.exec(message);
  if (unknown) {
    const near = closest(unknown[2], known);
    return `unknown flag ${unknown[1]}${unknown[2]}${near === null ? '' : ` (did you mean --${near}?)`}`;
  }
  const missing = /^Option '--([^ ']+) <value>' argument missing/.exec(message);
  if (missing) return `--${missing[1]} needs a value`;
  const valued = /^Option '--([^']+)' does not take an argument/.exec(message);
  if (valued) return `--${valued[1]} is a switch: it takes no value`;
  return message;
}

// Other tools' names for pirl's flags (PyTorch scripts' argparse, common CLIs): habits, answered with pirl's spelling.
const HABITS: Readonly<Record<string, string>> = {
  'batch-size': 'batch', batch_size: 'batch', batchsize: 'batch', bs: 'batch', output: 'out', 'output-dir': 'out', output_dir: 'out', outdir: 'out',
  'learning-rate': 'lr', learning_rate: 'lr', 'image-size': 'size', image_size: 'size', 'img-size': 'size',
  cuda: 'device cuda', gpu: 'device cuda', o: 'out',
};

// The known flag nearest to `given`: another tool's name for it, a prefix of one, or a typo (nearest), if one is.
function closest(given: string, known: readonly string[]): string | null {
  const habit = HABITS[given];
  if (habit !== undefined && known.includes(habit.split(' ')[0])) return habit;
  const prefixed = given.length >= 3 ? known.find((flag) => flag.startsWith(given)) : undefined;
  return prefixed ?? nearest(given, known);
}

/** A flag's text as the value a check expects: a number when it reads as one, else the text itself. */
function flagValue(text: string | boolean | undefined): unknown {
  if (typeof text !== 'string') return text;
  return /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(text.trim()) ? Number(text) : text;
}

/** Flag name → the option path it sets (e.g. { arch: 'model.arch', lr: 'baseLr' }). */
export type FlagMap = Readonly<Record<string, string>>;

/** The options object that the given flags spell, nested along their paths. */
export function optionsFromFlags(values: FlagValues, map: FlagMap): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [flag, path] of Object.entries(map)) {
    if (values[flag] === undefined) continue;
    const keys = path.split('.');
    let node = out;
    for (const key of keys.slice(0, -1)) node = (node[key] ??= {}) as Record<string, unknown>;
    node[keys[keys.length - 1]] = flagValue(values[flag]);
  }
  return out;
}

/**
 * Runs a library check or resolve over options that flags set (named `arg` there); an argument error
 * about one of them becomes a usage error naming the flag and the text given.
 */
export function asFlags<T>(values: FlagValues, map: FlagMap, arg: string, run: () => T): T {
  try {
    return run();
  } catch (err) {
    if (isArgumentError(err)) {
      for (const [flag, path] of Object.entries(map)) {
        if (values[flag] !== undefined && err.argument === `${arg}.${path}`) throw new UsageError(`--${flag} must be ${err.expected}, got '${values[flag]}'`);
      }
    }
    throw err;
  }
}

const RUN_FLAGS: FlagMap = { device: 'device', threads: 'threads' };

/** The run options that --device and --threads give, resolved by the library (device 'cpu' when left out). */
export function runFlags(values: FlagValues): ResolvedRunOptions {
  return asFlags(values, RUN_FLAGS, 'run', () => resolveRunOptions(optionsFromFlags(values, RUN_FLAGS), 'run'));
}

/** runFlags, with --threads applied to this process at once. */
export function applyRunFlags(values: FlagValues): ResolvedRunOptions {
  const run = runFlags(values);
  if (run.threads !== null) setNumThreads(run.threads);
  return run;
}

/** One flag checked by a library check: `check(value)` with the flag's value; errors name `--flag`. */
export function checkFlag<T>(values: FlagValues, flag: string, fallback: T, check: (arg: string, value: unknown) => T): T {
  if (values[flag] === undefined) return fallback;
  return asFlags(values, { [flag]: flag }, 'flag', () => check(`flag.${flag}`, flagValue(values[flag])));
}

/** A JSON file of options (--config): an object, or an error naming the file. */
export async function readOptionsFile(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    const handle = await openRegular(file);
    try {
      text = await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  } catch (err) {
    const { code } = err as NodeJS.ErrnoException;
    throw new UsageError(`--config ${file}: ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'a folder, not a file' : (err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`--config ${file} is not JSON: ${(err as Error).message}`);
  }
  try {
    return checkObject(file, parsed);
  } catch (err) {
    throw new UsageError(`--config ${(err as Error).message}`);
  }
}

/** The usage line of --layout, for the verbs that read image folders. */
export const LAYOUT_USAGE = "--layout auto|flat|classes (auto; a folder with images of its own and subfolders of images needs flat or classes)  --recursive (images in subfolders at any depth too: a class is every image below its folder)";

/** The usage line of --max-pixels, for the verbs that decode images. */
export const MAX_PIXELS_USAGE = `--max-pixels N (${SHARP_MAX_PIXELS}, sharp's limit: an image of more pixels is left out undecoded)`;

/** --max-pixels as ImageFolder's option (none given: its default). */
export function maxPixelsOption(values: FlagValues): { maxPixels?: number } {
  const maxPixels = checkFlag(values, 'max-pixels', undefined, (arg, value) => checkInteger(arg, value, 1, Number.MAX_SAFE_INTEGER));
  return maxPixels === undefined ? {} : { maxPixels };
}

/** --layout (checked: auto when not given) and --recursive, as ImageFolder's options. */
export function layoutFlag(values: FlagValues): { layout: FolderLayout; recursive: boolean } {
  return { layout: checkFlag(values, 'layout', DEFAULT_LAYOUT, (arg, value) => checkOneOf(arg, value, FOLDER_LAYOUTS)), recursive: values.recursive === true };
}

/**
 * A data argument: 'fashion-mnist' (its train or test split) or a folder of images stored at `size` px,
 * read as --layout says.
 */
export async function openData(spec: string, size: number, values: FlagValues, split: 'train' | 'test' = 'train'): Promise<Dataset> {
  const layout = layoutFlag(values);
  const decoding = maxPixelsOption(values);
  // --cache keeps the folder's decoded images (train's, embed's, eval's --data); a --test set is decoded once anyway.
  const cache = split === 'train' && typeof values.cache === 'string' ? values.cache : undefined;
  if (spec === 'fashion-mnist') {
    if (cache !== undefined) throw new UsageError("--cache keeps a folder's decoded images: fashion-mnist is read into memory whole");
    for (const flag of ['layout', 'recursive']) if (values[flag] !== undefined) throw new UsageError(`--${flag} says how a folder is read: fashion-mnist is not a folder`);
    if (values['max-pixels'] !== undefined) throw new UsageError('--max-pixels limits the images decoded: fashion-mnist is read as 28×28 arrays');
    return IdxDataset.fashionMnist(split);
  }
  const shown = new Progress().images(`decode cache ${cache}:`);
  const onCacheProgress = (done: number, total: number) => {
    keptOnQuit(done < total ? `the decode cache's build is kept in ${cache}.partial: the next run continues it` : null);
    shown(done, total);
  };
  try {
    return await ImageFolder.open(spec, { size, ...layout, ...decoding, ...(cache === undefined ? {} : { cache, onCacheProgress }) });
  } catch (err) {
    if (err instanceof AmbiguousLayoutError) throw new UsageError(err.explain('--layout'));
    if (isArgumentError(err) && err.argument === 'options.cache') throw new UsageError(`--cache must be ${err.expected}, got '${cache}'`);
    throw err;
  }
}

/** `flag`'s path outside the data folder `spec`: what pirl writes there (a run's curves.png, a preview) would be read as its images next time. */
export async function checkOutsideData(flag: string, target: string, spec: string, defaulted = false): Promise<void> {
  if (spec === 'fashion-mnist') return;
  const [data, written] = await Promise.all([realPathOf(spec), realPathOf(target)]);
  const relative = path.relative(data, written);
  if (relative === '..' || relative.startsWith(`..${path.sep}`) || path.isAbsolute(relative)) return;
  throw new UsageError(`${flag} ${target}${defaulted ? ' (the default)' : ''} is inside the data folder ${spec}: what pirl writes there would be read as its images next time; give ${flag} outside it`);
}

/** The files found unreadable so far in the folder a data set is read from (a held-out split's: its folder's). */
export function unreadableOf(data: Dataset): string[] {
  return [...(sampleFiles(data)?.folder.failures.keys() ?? [])];
}

/** The indices of a data set's samples (a held-out split: its own) found unreadable so far; none where a cache left them out. */
export function unreadableIn(data: Dataset): number[] {
  const samples = sampleFiles(data);
  if (!samples || samples.folder.failures.size === 0) return [];
  return Array.from({ length: data.length }, (_, i) => i).filter((i) => samples.folder.failures.has(samples.file(i)));
}

/** The images of a data set and those its cache left out. */
export function imagesFound(data: Dataset): number {
  return data.length + (data instanceof ImageFolder ? data.leftOut : 0);
}

/** The images of a labeled set's largest class, its `unreadable` samples left out: a kNN k above it votes across classes. */
export function largestClass(set: Dataset, unreadable: ReadonlySet<number> = new Set()): number {
  const counts = new Map<number, number>();
  set.labels?.forEach((label, i) => {
    if (!unreadable.has(i)) counts.set(label, (counts.get(label) ?? 0) + 1);
  });
  return Math.max(0, ...counts.values());
}

/** Data kNN can hold a fifth of out (a folder without --test): five images at least. */
export function checkHoldOut(spec: string, data: Dataset): void {
  const leftOut = imagesFound(data) - data.length;
  if (spec !== 'fashion-mnist' && data.length < 5) {
    throw new UsageError(`${spec} has ${data.length} image(s)${leftOut > 0 ? ` that read (${leftOut} unreadable left out)` : ''}: too few to hold out a fifth for kNN; give --test data`);
  }
}

/** holdOut(data), a split with nothing to score or nothing to vote said as --data's (a folder's unreadable images). */
export function holdOutOrSay(spec: string, data: Dataset): ReturnType<typeof holdOut> {
  try {
    return holdOut(data);
  } catch (err) {
    throw isArgumentError(err) && err.argument === 'dataset' ? errorFrom(`${spec} cannot be split for kNN (${err.message}): give --test data`, err) : err;
  }
}

/**
 * The kNN protocol's two sets: fashion-mnist's test split, the --test data, or else a held-out fifth of
 * the data (every 5th sample) against the rest, said on stderr — never the data scored against itself.
 */
export async function knnSplit(data: Dataset, spec: string, testSpec: string | undefined, size: number, values: FlagValues): Promise<{ train: Dataset; test: Dataset }> {
  // Before the split is announced, and before a --test folder is read.
  const mustBeLabeled = (set: string) => new UsageError(`${set} must be labeled data (class subfolders or fashion-mnist), got unlabeled data`);
  if (!data.labels) throw mustBeLabeled(`--data ${spec}`);
  if (testSpec !== undefined) {
    // Named by its flag: "nosuch: no such folder" did not say which of the two sets it was.
    const test = await openData(testSpec, size, values, 'test').catch((err: Error) => {
      throw err instanceof UsageError ? new UsageError(`--test ${err.message}`) : errorFrom(`--test ${err.message}`, err);
    });
    if (!test.labels) throw mustBeLabeled(`--test ${testSpec}`); // before --data's features are made
    return { train: data, test };
  }
  if (spec === 'fashion-mnist') return { train: data, test: await openData(spec, size, values, 'test') };
  checkHoldOut(spec, data);
  const { train, test } = holdOutOrSay(spec, data);
  console.error(`pirl: no --test data: a held-out fifth of ${spec} (every 5th image, ${test.length}) is scored against the other ${train.length}`);
  return { train, test };
}

/** Creates `dir` (a --flag's folder) and its missing parents, or a UsageError saying why not. */
export async function makeOutputDir(flag: string, dir: string): Promise<void> {
  try {
    await makeFolder(dir);
  } catch (err) {
    throw new UsageError(`--${flag} ${dir}: ${(err as Error).message}`);
  }
}

/**
 * --out FILE of a verb that works before it writes: checked before the work (the extension, when the
 * verb writes one format; its folder made and writable), so a mistake costs nothing.
 */
export async function outputFile(file: string, extension?: string, replacing?: { inputs: string[]; force: boolean }): Promise<string> {
  if (extension !== undefined && path.extname(file).toLowerCase() !== extension) throw new UsageError(`--out must name a ${extension} file, got '${file}'`);
  const target = await fs.stat(file).catch(() => null);
  if (target?.isDirectory() || /[\\/]$/.test(file)) throw new UsageError(`--out must name a file, got the folder '${file}'`);
  if (replacing) await checkReplaceable(file, target !== null, replacing.inputs, replacing.force);
  const dir = path.dirname(path.resolve(file));
  await makeOutputDir('out', dir);
  try {
    await fs.access(dir, fsConstants.W_OK);
  } catch (err) {
    throw new UsageError(`--out ${file}: cannot write in ${dir}: ${(err as Error).message}`);
  }
  return file;
}

// Trained work is not lost to a slip of --out: never the command's own input (its --cache too, not made yet), a model or
// checkpoint only with --force.
async function checkReplaceable(file: string, exists: boolean, inputs: string[], force: boolean): Promise<void> {
  const target = await realPathOf(file);
  for (const input of inputs) {
    if ((await realPathOf(input)) === target) throw new UsageError(`--out ${file} is the file this command reads (${input}): give another file`);
  }
  if (!exists) return;
  const metadata = await readSafetensorsMetadata(file).catch(() => ({} as Record<string, string>));
  const held = metadata['pirl-checkpoint'] !== undefined ? 'a training checkpoint' : metadata.pirl !== undefined ? 'a trained pirl model' : null;
  if (held && !force) throw new UsageError(`--out ${file} holds ${held}: --force replaces it`);
}

/** A side far from the model's training side gives features it never learned to make: said, not refused. */
export function warnOfSize(model: PirlModel, size: number, what = `--size ${size}`): void {
  const trained = model.imageSize;
  if (trained !== null && (size > 2 * trained || 2 * size < trained)) {
    console.error(`pirl: warning: ${what} is far from the ${trained} px this model was trained at: its features there are not the ones it learned`);
  }
}

/**
 * --size of the folder `spec`'s stored images: unless given, `stored` (a resumed run's own), else room for the
 * sampler's crops. Refused for fashion-mnist, as --cache is: it was ignored there without a word.
 */
export function folderSize(values: FlagValues, sampler: SamplerConfig, spec: string, stored: number | null = null): number {
  if (spec === 'fashion-mnist' && values.size !== undefined) throw new UsageError("--size is the side a folder's images are stored at: fashion-mnist is read as 28×28 arrays");
  return checkFlag(values, 'size', stored ?? folderImageSize(sampler), (arg, v) => checkInteger(arg, v, 1, MAX_IMAGE_SIDE));
}
