// `pirl train`: pretrain PIRL on a folder of images or 'fashion-mnist', with checkpoints, metrics,
// curves and exact resume.
import { existsSync, promises as fs, rmSync } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { isDeepStrictEqual } from 'util';

import { ARCHS, DEFAULT_PRESET, DEFAULT_TRAIN_CONFIG, KNN_DEFAULTS, PRESETS, PRESET_NAMES, RECIPES, WEIGHTS_SHAPE, distributedFromEnv, resolveTrainConfig, type Device, type ResolvedDistributedOptions, type ResolvedTrainConfig, type StartingModel } from '../config';
import type { DeepReadonly } from '../schema';
import { LR_UPDATES } from '../train/schedule';
import type { Dataset } from '../data/datasets';
import { ImageFolder, type FolderRead } from '../data/imageFolder';
import { realPathOf } from '../folders';
import { checkInteger, errorFrom, isArgumentError, nearest } from '../errors';
import { knnAccuracy } from '../eval/knn';
import { atExit } from '../exitActions';
import { takeLock, unwritable } from '../lockFile';
import { PirlModel, weightsKind } from '../model';
import { jsonMetadata, readSafetensorsMetadata, removeStaleTemporaries } from '../safetensors';
import { checkpointRunOf } from '../train/checkpoint';
import { Trainer } from '../train/trainer';
import { beforeJoining } from '../train/rendezvous';
import { LAYOUT_USAGE, MAX_PIXELS_USAGE, UsageError, applyRunFlags, asFlags, runFlags, checkFlag, checkHoldOut, checkOutsideData, folderSize, holdOutOrSay, imagesFound, knnSplit, largestClass, layoutFlag, makeOutputDir, openData, optionsFromFlags, parseFlags, readOptionsFile, unreadableOf, type FlagMap, type FlagValues, type Flags } from './args';
import { LAUNCH_FOLDER_PREFIX, launchLocalRanks } from './launch';
import { writeCurves } from './plot';
import { MetricsLog, type Line } from './metrics';
import { Progress, formatDuration, rate } from './progress';
import { setDeterministic, withHostThreads } from '../runtime';
import { SIGNAL_CAUSES, handleSignals, keptNote, quit, type QuitSignal } from './quit';

/** The flags that set training options, and the option each sets. */
const CONFIG_FLAGS: FlagMap = {
  recipe: 'recipe', arch: 'model.arch', stem: 'model.stem', width: 'model.width', preset: 'sampler.preset',
  epochs: 'epochs', batch: 'batchSize', negatives: 'loss.negatives', lr: 'baseLr', warmup: 'warmupEpochs',
  'lr-update': 'lrUpdate', mode: 'loss.mode', z: 'loss.z', lambda: 'loss.lambda', tau: 'loss.tau', 'bank-init': 'bankInit',
  'epoch-length': 'epochLength', seed: 'seed', device: 'device', precision: 'precision', 'sync-batch-norm': 'syncBatchNorm',
  'shared-negatives': 'loss.sharedNegatives', 'exclude-positive': 'loss.excludePositive',
};
/** The flags of CONFIG_FLAGS that take no value. */
const SWITCHES = ['sync-batch-norm', 'shared-negatives', 'exclude-positive'];
const OTHER_FLAGS = ['out', 'config', 'init', 'size', 'layout', 'max-pixels', 'cache', 'checkpoint-every', 'knn-every', 'threads', 'nproc'];
export const TRAIN_FLAGS: Flags = {
  values: [...Object.keys(CONFIG_FLAGS).filter((f) => !SWITCHES.includes(f)), ...OTHER_FLAGS],
  switches: ['resume', 'auto-resume', 'rescale-batch', 'force', 'cuda-graphs', 'no-cuda-graphs', 'deterministic', 'recursive', ...SWITCHES],
};

const d = DEFAULT_TRAIN_CONFIG;
export const TRAIN_USAGE = `train <data> [options]          pretrain PIRL on a folder of images or 'fashion-mnist'
        --out DIR (pirl-run)  --config FILE.json (options as in the API)  --resume (with --epochs N: a run's new length)  --force (replace a run in DIR)
        --auto-resume (continue the run in DIR if it has a checkpoint, else start it: for launchers that restart a job)
        --init FILE (a new run from the weights of a model file or a run's checkpoint, a folder grown since: their arch, stem and width; or of a trunk: pirl export's, torchvision's)
        --rescale-batch (with --resume/--auto-resume: on another number of ranks, each rank's batch the run's global batch / ranks; a resume reads no --batch)
        --recipe ${RECIPES.join('|')} (${d.recipe}: measured to learn; paper: the paper's setup)
        --arch ${ARCHS.join('|')} (${d.model.arch})  --stem small|imagenet (${d.model.stem})  --width W (${d.model.width})
        --preset small|paper (the recipe's: ${DEFAULT_PRESET}; paper with --recipe paper)  --size N (stored side of folder images: ${folderSizeText(d)})
        --cache FILE (the folder decoded once into FILE, read by later epochs and runs; unreadable images left out of the data)
        ${LAYOUT_USAGE}
        ${MAX_PIXELS_USAGE}
        --epochs N (${d.epochs})  --batch N (${d.batchSize})  --negatives K (${d.loss.negatives})  --lr BASE (${d.baseLr})  --warmup EPOCHS (${d.warmupEpochs})
        --lr-update ${LR_UPDATES.join('|')} (${d.lrUpdate}: the cosine every step; epoch: once per epoch, as VISSL's PIRL config)
        --mode nce|infonce (${d.loss.mode})  --z frozen|ema (${d.loss.z})  --lambda L (${d.loss.lambda})  --tau T (${d.loss.tau})
        --shared-negatives (one set of K for the whole batch)  --exclude-positive (never a sample's own row among its K)
        --bank-init random|features (${d.bankInit})  --epoch-length N  --checkpoint-every N (100)
        --knn-every N (0: off; needs labels)
        --threads N  --device cpu|cuda|cuda:N (${d.device})  --precision fp32|bf16|fp16 (${d.precision})  --seed N (${d.seed})
        --nproc N (data-parallel: N local ranks, --batch each, --threads each: cores/N by default; under torchrun, one rank per process)
        --sync-batch-norm (data-parallel: BatchNorm over all ranks' batches, so N ranks train as one process with N×--batch)
        --cuda-graphs / --no-cuda-graphs (CUDA: each step one replay of a captured graph; on by default for one process
          unless --mode nce --z ema; with --resume too, not saved in the run)
        --deterministic (GPU: deterministic kernels, cuDNN's benchmark mode off: a second run or a resume repeats the
          run bit for bit, as on the CPU, more slowly; with --resume too, not saved in the run)`;

function folderSizeText(c: DeepReadonly<ResolvedTrainConfig>): string {
  return `${folderSize({}, c.sampler, '')} for the small preset`;
}

/** --config's options under the flags' (flags win; model, loss and sampler merge one level deep). */
function mergeOptions(file: Record<string, unknown>, flags: Record<string, unknown>): Record<string, unknown> {
  const merged: Record<string, unknown> = { ...file, ...flags };
  for (const key of ['model', 'loss', 'sampler']) {
    if (flags[key] === undefined) continue;
    const base = typeof file[key] === 'string' ? { preset: file[key] } : file[key];
    merged[key] = { ...(base as object), ...(flags[key] as object) };
  }
  return merged;
}

/** --config's options ({} without it), checked alone: the file's own mistakes, named by the file. */
async function configFile(values: FlagValues): Promise<Record<string, unknown>> {
  const file = typeof values.config === 'string' ? values.config : undefined;
  if (!file) return {};
  const fromFile = await readOptionsFile(file);
  try {
    resolveTrainConfig(fromFile, file);
  } catch (err) {
    // The file's own mistakes (named `file.…`, or the file itself); not another's met on the way (PIRL_NUM_THREADS).
    if (!isArgumentError(err) || !(err.argument === file || err.argument.startsWith(`${file}.`))) throw err;
    // A flag's name where the API's is meant ("lr" for baseLr): said.
    const key = err.argument.slice(file.length + 1);
    const flag = Object.hasOwn(CONFIG_FLAGS, key) && CONFIG_FLAGS[key] !== key && err.received === key && !err.message.includes(`(did you mean ${CONFIG_FLAGS[key]}?)`)
      ? ` (--${key} sets ${CONFIG_FLAGS[key]})` : '';
    // A nested option given at the top ("wdith" for model.width): the path meant, where no top-level name was near.
    const paths = Object.values(CONFIG_FLAGS).filter((p) => p.includes('.'));
    const leaf = flag === '' && err.received === key && !err.message.includes('(did you mean') ? nearest(key, paths.map((p) => p.slice(p.lastIndexOf('.') + 1))) : null;
    const nested = leaf === null ? '' : ` (did you mean ${paths.find((p) => p.endsWith(`.${leaf}`))}?)`;
    // "cfg.json.model.widht … cfg.json.model takes": the file, then the option's path in it.
    const inFile = err.message.split(`${file}.`).join('');
    throw new UsageError(`--config ${file}: ${inFile === err.message ? err.message : inFile}${flag}${nested}`);
  }
  return fromFile;
}

/** The config the flags give over `base` (--config's options), of a run from `start`'s weights if given (--init). */
function configOf(values: FlagValues, base: Record<string, unknown>, start?: StartingModel): ResolvedTrainConfig {
  const merged = mergeOptions(base, optionsFromFlags(values, CONFIG_FLAGS));
  try {
    return asFlags(values, CONFIG_FLAGS, 'config', () => resolveTrainConfig(merged, 'config', false, start));
  } catch (err) {
    // The sampler's views too small for the stem (--preset small's patches under --stem imagenet): the flags that chose them.
    const chosenBy = ['recipe', 'stem', 'preset'].filter((f) => values[f] !== undefined).map((f) => `--${f} ${values[f]}`);
    if (isArgumentError(err) && err.expected.includes('for model.stem') && chosenBy.length > 0) throw new UsageError(`${chosenBy.join(' with ')}: ${err.message}`);
    throw err;
  }
}

/**
 * --init's model: a model file's or a run checkpoint's as it is; a trunk (pirl export's, or torchvision's weights) in a
 * new model of the flags' options and of the trunk's arch, stem and width where it says them (another flag refused,
 * as against a model's), whose heads are new.
 */
async function initModel(file: string, values: FlagValues, base: Record<string, unknown>): Promise<PirlModel> {
  const metadata = await readSafetensorsMetadata(file);
  if (weightsKind(metadata) !== 'trunk') return PirlModel.load(file); // a model, or what it says a file that is neither is
  const { arch, stem, width } = (jsonMetadata(file, metadata, 'pirl-trunk') ?? {}) as Partial<ResolvedTrainConfig['model']>; // pirl export's
  const model = await PirlModel.create(configOf(values, base, { options: { arch, stem, width }, name: `--init ${file}` }).model);
  try {
    await model.importTrunk(file);
  } catch (err) {
    model.dispose();
    throw arch === undefined && err instanceof Error ? errorFrom(`${err.message}: --arch, --stem and --width say which model its weights fit`, err) : err;
  }
  return model;
}

function newRunConfig(values: FlagValues, base: Record<string, unknown>, init: PirlModel | null): ResolvedTrainConfig {
  return configOf(values, base, init ? { options: init.options, name: `--init ${values.init}` } : undefined);
}

// The settings an options object gives, as config paths ('loss.tau'); a sampler preset stands for the whole sampler.
function settingsOf(options: Record<string, unknown>, prefix = ''): string[] {
  return Object.entries(options).flatMap(([key, v]) => {
    const at = `${prefix}${key}`;
    if (at === 'sampler.preset' || (at === 'sampler' && typeof v === 'string')) return ['sampler'];
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? settingsOf(v as Record<string, unknown>, `${at}.`) : [at];
  });
}

async function resumeRun(values: FlagValues, spec: string, checkpoint: string, device: Device, distributed: ResolvedDistributedOptions | null):
  Promise<{ data: Dataset; config: ResolvedTrainConfig; start: () => Promise<Trainer> }> {
  const moved = values.device === undefined ? {} : { device }; // without --device the run stays where its checkpoint says
  const saved = checkpointRunOf(checkpoint, await readSafetensorsMetadata(checkpoint), moved.device);
  const rescale = values['rescale-batch'] === true;
  // With --rescale-batch the run's global batch decides each rank's: the command's --batch (its first start's, or its
  // --config file's batchSize) is not read.
  const changed = (await changedSettings(values, saved.config, rescale ? ['batchSize'] : [])).filter((c) => c.flag !== 'epochs');
  const flag = values['auto-resume'] ? '--auto-resume' : '--resume';
  if (changed.length > 0) {
    const named = changed.map((c) => `--${c.flag}${c.run === undefined ? '' : ` (the run's: ${c.run})`}`);
    throw new UsageError(`${flag} continues the run its checkpoint describes; ${named.join(', ')} cannot change it`);
  }
  const epochs = values.epochs === undefined ? saved.config.epochs : Number(values.epochs); // checked with the other flags above
  const length = epochs === saved.config.epochs ? {} : { epochs };
  const ranks = distributed?.worldSize ?? 1;
  const global = saved.config.batchSize * saved.worldSize;
  if (saved.worldSize !== ranks && !rescale) {
    const how = saved.worldSize === 1 ? 'run it as one process (no --nproc, no launcher)' : `give --nproc ${saved.worldSize} (or start it under a launcher with WORLD_SIZE=${saved.worldSize})`;
    const exact = saved.config.syncBatchNorm ? "its steps to float rounding, as it normalises over all ranks' batches" : "not exact: each rank's BatchNorm batch changes";
    const other = global % ranks === 0 ? `, or --rescale-batch to go on with ${ranks} × ${global / ranks} (${exact})` : '';
    throw new UsageError(`${flag}: the run in ${path.dirname(checkpoint)} trained on ${saved.worldSize} rank(s) and resumes exactly only on as many; this is ${ranks}: ${how}${other}`);
  }
  if (saved.worldSize !== ranks && global % ranks !== 0) {
    throw new UsageError(`--rescale-batch: the run's global batch of ${global} (${saved.worldSize} rank(s) × ${saved.config.batchSize}) does not split over ${ranks} ranks: resume on a divisor of ${global}`);
  }
  // The run's images as it stored them: at another side each view would be cut from other pixels.
  const size = folderSize(values, saved.config.sampler, spec, saved.storedSide);
  if (saved.storedSide !== null && size !== saved.storedSide) {
    throw new UsageError(`${flag} continues the run its checkpoint describes; --size cannot change it (the run stored its images at ${saved.storedSide} px: drop --size)`);
  }
  const data = await openData(spec, size, readLikeTheRun(values, saved.read));
  const start = async () => {
    const trainer = await withLibraryFlags(values, "the run's", () => Trainer.resume(checkpoint, data, { ...moved, ...length, distributed, cudaGraphs: cudaGraphsFlag(values), rescaleBatch: rescale }));
    if (saved.worldSize !== ranks && trainer.isMain) {
      console.error(`pirl: the run trained on ${saved.worldSize} rank(s) × ${saved.config.batchSize} goes on with ${ranks} × ${trainer.config.batchSize} (--rescale-batch): the same global batch`);
    }
    if (length.epochs !== undefined && trainer.isMain) {
      console.error(`pirl: the run's length changes from ${saved.config.epochs} to ${epochs} epochs: from here on its lr follows the schedule of a ${epochs}-epoch run ` +
        `(not the run ${epochs} epochs from the start would have been)`);
    }
    return trainer;
  };
  return { data, config: { ...saved.config, epochs }, start };
}

// The folder read as the run read it where --layout and --recursive are left out (a resume by hand without
// --recursive listed other images); given, they are the command's, and other data is refused by Trainer.resume.
function readLikeTheRun(values: FlagValues, read: FolderRead | null): FlagValues {
  return read === null ? values : { ...values, layout: values.layout ?? read.layout, ...(read.recursive ? { recursive: true } : {}) };
}

/**
 * The flags of a resumed run that would change its config, each with the run's value where it is one (a preset
 * stands for a whole sampler): those restating it are fine, so that the command that started a run, with
 * --resume, continues it (what the CLI says after Ctrl-C).
 */
async function changedSettings(values: FlagValues, saved: ResolvedTrainConfig, unread: readonly string[] = []): Promise<Array<{ flag: string; run?: string }>> {
  const given = Object.keys(CONFIG_FLAGS).filter((f) => f !== 'device' && values[f] !== undefined);
  if (given.length === 0 && values.config === undefined) return [];
  const fromFile = await configFile(values);
  // A sampler not restated is the run's: the default one under a restated --stem imagenet was refused as too small for it.
  const sampler = values.preset === undefined && values.recipe === undefined && fromFile.sampler === undefined ? { sampler: saved.sampler } : {};
  // The model's shape not restated is the run's too (its --init's weights': the recipe's model may not fit the sampler).
  const model = Object.fromEntries(WEIGHTS_SHAPE.map((k) => [k, saved.model[k]]));
  const stated = configOf(values, { device: saved.device, ...sampler, ...fromFile, model: { ...model, ...(fromFile.model as object) } }); // the file and the flags, as they made the run
  // A preset restated stands for the run's sampler: its photometric step is the run's unless the file names it (runs
  // checkpointed before format 6 applied one op, which the paper preset now names 'all').
  const restated = settingsOf(fromFile).includes('sampler.photometricOps') ? stated
    : { ...stated, sampler: { ...stated.sampler, photometricOps: saved.sampler.photometricOps } };
  const at = (config: ResolvedTrainConfig, key: string) => key.split('.').reduce<unknown>((node, k) => (node as Record<string, unknown> | undefined)?.[k], config);
  const differs = (key: string) => !unread.includes(key) && !isDeepStrictEqual(at(restated, key), at(saved, key));
  const keyOf = (flag: string) => settingsOf(optionsFromFlags({ [flag]: values[flag] }, CONFIG_FLAGS))[0];
  const changed = given.filter((flag) => differs(keyOf(flag))).map((flag): { flag: string; run?: string } => {
    const run = at(saved, keyOf(flag));
    // The sampler by the preset it is, if it is one ("--preset cannot change it" said nothing of the run's).
    const preset = keyOf(flag) === 'sampler' ? PRESET_NAMES.find((name) => isDeepStrictEqual({ ...PRESETS[name] }, saved.sampler)) : undefined;
    if (preset !== undefined) return { flag, run: preset };
    return run === null || run === undefined || typeof run === 'object' ? { flag } : { flag, run: String(run) };
  });
  // What the file sets, and only that: the rest is the run's, whatever its defaults were.
  const fields = [...new Set(settingsOf(fromFile))].filter((key) => key !== 'device' && differs(key));
  if (fields.length > 0) changed.push({ flag: `config (its ${fields.join(', ')})` });
  return changed;
}

/** Flags given that this run (new or resumed) will not use, or not as their names promise: said by rank 0, not refused (a script may share them). */
function warnOfIdleSettings(values: FlagValues, c: ResolvedTrainConfig, distributed: ResolvedDistributedOptions | null, knnEvery: number): void {
  if ((distributed?.rank ?? 0) !== 0) return;
  const idle: string[] = [];
  if (knnEvery > c.epochs) idle.push(`--knn-every ${knnEvery} scores the epochs that are multiples of ${knnEvery}: a run of ${c.epochs} epoch(s) has none (--knn-every ${c.epochs} scores its last)`);
  if (values['sync-batch-norm'] && distributed === null) idle.push('--sync-batch-norm does nothing in a single process (it syncs the ranks of --nproc or a launcher)');
  if (values.z !== undefined && c.loss.mode !== 'nce') idle.push(`--z sets NCE's normaliser: --mode ${c.loss.mode} does not use it`);
  for (const text of idle) console.error(`pirl: warning: ${text}`);
}

/** --cuda-graphs insists, --no-cuda-graphs turns them off; neither: the Trainer's default (on for one CUDA process). */
function cudaGraphsFlag(values: FlagValues): boolean | undefined {
  if (values['cuda-graphs'] && values['no-cuda-graphs']) throw new UsageError('--cuda-graphs and --no-cuda-graphs: give one of them');
  return values['cuda-graphs'] ? true : values['no-cuda-graphs'] ? false : undefined;
}

/** Trainer.create or resume, whose refusals of what flags gave name the flags (--batch's default too: it may not fit the data). */
async function withLibraryFlags(values: FlagValues, batchFrom: string, run: () => Promise<Trainer>): Promise<Trainer> {
  try {
    return await run();
  } catch (err) {
    if (!isArgumentError(err)) throw err;
    if (err.argument === 'options.cudaGraphs') throw new UsageError(`--cuda-graphs: ${err.expected.replace(/^false /, 'not ')}`);
    if (err.argument === 'options.epochs') throw new UsageError(`--epochs must be ${err.expected}, got '${values.epochs}'`);
    if (err.argument === 'config.batchSize') throw new UsageError(`--batch must be ${err.expected}, got ${values.batch === undefined ? `${err.received} (${batchFrom})` : `'${values.batch}'`}`);
    throw err;
  }
}

/** torchrun's environment (RANK, WORLD_SIZE, …), errors named after the variable as a usage error. */
function distributedFromEnvFlag(): ResolvedDistributedOptions | null {
  try {
    return distributedFromEnv();
  } catch (err) {
    throw isArgumentError(err) ? new UsageError(`the environment: ${err.message}`) : err;
  }
}

// --knn-every's data (labeled, with a fifth to hold out), checked before the ranks join.
function checkKnnData(knnEvery: number, spec: string, data: Dataset): void {
  if (!knnEvery) return;
  if (!data.labels) throw new UsageError('--knn-every needs labeled data (class subfolders or fashion-mnist)');
  checkHoldOut(spec, data);
  if (spec !== 'fashion-mnist') holdOutOrSay(spec, data); // a fifth with nothing on one side: said now, not after the bank's pass
}

/** Output files of a run in `out` that a new run would overwrite or append to. */
const RUN_FILES = ['checkpoint.safetensors', 'model.safetensors', 'metrics.jsonl', 'metrics.csv'];
/** Every file a run writes in `out`: RUN_FILES and its picture of the metrics. */
const RUN_OUTPUTS = [...RUN_FILES, 'curves.png'];

async function runFilesIn(out: string): Promise<string[]> {
  const present = await Promise.all(RUN_FILES.map((n) => fs.access(path.join(out, n)).then(() => n, () => null)));
  return present.filter((n): n is string => n !== null);
}

function holdsRun(out: string, found: string[], auto: boolean): UsageError {
  const resumable = found.includes('checkpoint.safetensors') ? '--resume continues it, ' : 'it has no checkpoint to resume from; ';
  // --auto-resume never replaces a model, and refuses --force beside it: a command of its own does.
  const force = auto ? 'a command with --force in place of --auto-resume' : '--force';
  return new UsageError(`${out} already holds a run (${found.join(', ')}): ${resumable}${force} starts a new one in its place`);
}

/** Removes what writes of the run's files killed midway (kill -9, a power cut) left in `out`: their temporaries. */
async function removeRunTemporaries(out: string): Promise<void> {
  for (const file of RUN_OUTPUTS) await removeStaleTemporaries(path.join(out, file));
}

// The exit code of a rank that stopped because another was told to (its run unfinished, not failed): as SIGTERM's.
const STOPPED_WITH_A_RANK = 128 + os.constants.signals.SIGTERM;

// The run folders this process holds the lock of.
const locked = new Set<string>();

/** One run at a time in `out` (its run.lock, held until this process exits): two interleaved their metrics and checkpoints. */
async function lockRun(out: string): Promise<void> {
  if (locked.has(path.resolve(out))) return;
  const taken = await takeLock(path.join(out, 'run.lock')).catch((err: unknown) => {
    // Said as the flag's (it was the lock file's raw error).
    throw unwritable(err) ? new UsageError(`--out ${out}: cannot write there (${err.code}): give an --out you can write`) : err;
  });
  if ('holder' in taken) throw new UsageError(`${out} is in use by another run (${taken.holder ?? 'one starting'}): wait for it to end, or give another --out`);
  locked.add(path.resolve(out)); // freed when this process exits or quits (lockFile.ts)
}

interface StopSignals {
  /** From now a signal stops `trainer` after its step (before: it quits). */
  attach(trainer: Trainer): void;
  /** Training is over: a signal quits again, as by default. */
  detach(): void;
  /** Aborted when a stop is asked for: work between steps (a kNN pass) gives way. */
  signal: AbortSignal;
  /** 128 + the number of the signal that stopped the run, if one did. */
  code(): number | undefined;
}

/**
 * Ctrl-C, a launcher's or scheduler's SIGTERM (torchrun, Slurm, Kubernetes: SIGKILL follows after a
 * grace period), the terminal's SIGHUP, or the end of the `--nproc` launcher that started this rank: stop after the step in
 * progress (on every rank: they vote), rank 0 writing the checkpoint; the signal again: now.
 */
function stopOnSignals(checkpoint: string, main: boolean): StopSignals {
  let trainer: Trainer | null = null;
  let began = false;
  const stopping = new AbortController();
  let first: QuitSignal | null = null;
  const quitting = (signal: QuitSignal) => {
    // After a progress line; after "stopping … and writing", what was not written.
    if (main && first === null) process.stderr.write('\n');
    else if (main) {
      process.stderr.write(existsSync(checkpoint) ? `\npirl: quit at once: ${checkpoint} is as the run's last write of it left it (--resume continues from there)\n`
        : '\npirl: quit at once, before any checkpoint was written: nothing to resume\n');
    }
    quit(signal);
  };
  const stop = (signal: QuitSignal, why: string) => {
    if (trainer === null && !began && main) console.error(`\npirl: ${why} before training began (data, cache, memory bank): nothing to save${keptNote()}`);
    if (trainer === null) return quitting(signal); // before the first step (data, cache, bank), or after the last
    if (first !== null) return;
    first = signal;
    stopping.abort();
    if (main) console.error(`\npirl: ${why}: stopping after this step and writing ${checkpoint} (${signal === 'SIGINT' ? 'Ctrl-C' : signal} again to quit at once)`);
    trainer!.stop();
    // A terminal's Ctrl-C reaches --nproc's ranks twice (from the terminal, and forwarded by the launcher):
    // a repeat within a second is the same one.
    setTimeout(() => handleSignals(quitting), 1000).unref();
  };
  handleSignals((signal) => stop(signal, SIGNAL_CAUSES[signal])); // SIGHUP (a dropped ssh session) as SIGTERM: not killed unsaved
  // A rank of `--nproc` hears of its launcher's end by its IPC channel closing (no signal reaches it then).
  if (process.env.PIRL_LAUNCHED === '1' && process.channel) {
    process.channel.unref();
    process.once('disconnect', () => {
      // The launcher's folder of the rendezvous file, which it removes when it ends but not when killed: rank 0 does.
      const folder = path.dirname(process.env.PIRL_STORE_FILE ?? '');
      if (main && path.basename(folder).startsWith(LAUNCH_FOLDER_PREFIX)) atExit(() => rmSync(folder, { recursive: true, force: true }));
      stop('SIGTERM', 'the launcher (pirl train --nproc) ended');
    });
  }
  return {
    attach: (t) => void ((trainer = t), (began = true)),
    detach: () => void (trainer = null),
    signal: stopping.signal,
    code: () => (first === null ? undefined : 128 + os.constants.signals[first]),
  };
}

/**
 * How to continue this run: this command with --resume instead of --force (as it is with --auto-resume),
 * with --nproc again for the ranks of one; under another launcher, its command.
 */
function resumeCommand(args: string[], distributed: ResolvedDistributedOptions | null): string {
  const resumable = args.filter((a, i) => a !== '--force' && a !== '--resume' && a !== '--init' && args[i - 1] !== '--init' && !a.startsWith('--init=')); // --init: the run's start, which --resume refuses
  const again = args.includes('--auto-resume') ? args : [...resumable, '--resume'];
  if (distributed && process.env.PIRL_LAUNCHED === '1') again.push('--nproc', String(distributed.worldSize));
  const command = ['pirl', 'train', ...again].map((a) => (/^[\w./:=,@+-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`)).join(' ');
  return distributed && process.env.PIRL_LAUNCHED !== '1' ? `the launcher's command, its ranks running ${command}` : command;
}

/** A run to start in `out`: resumed from its checkpoint, or new (its data opened); `start` creates the Trainer (and joins the ranks). */
async function planRun(values: FlagValues, spec: string, out: string, log: MetricsLog, device: Device, distributed: ResolvedDistributedOptions | null,
  knnEvery: number): Promise<{ resumed: boolean; start: () => Promise<Trainer> }> {
  const main = (distributed?.rank ?? 0) === 0;
  await checkOutsideData('--out', out, spec, values.out === undefined);
  const outStat = await fs.stat(out).catch(() => null);
  if (outStat !== null && !outStat.isDirectory()) throw new UsageError(`--out ${out}: it is a file, not a folder (a run's folder)`);
  // Before the cache is built: the run would take it for a run of its own, --force write its checkpoint over it, or its
  // lock (FILE.lock) be the run's (the run waited on itself). By real paths: a link to --out is --out.
  if (typeof values.cache === 'string') {
    const [cache, outReal] = [await realPathOf(values.cache), await realPathOf(out)];
    const own = [...RUN_OUTPUTS, 'run.lock'].find((f) => cache === path.join(outReal, f));
    if (cache === outReal) throw new UsageError(`--cache ${values.cache} is --out: the run's folder cannot be its cache file; give --cache another path`);
    if (own) throw new UsageError(`--cache ${values.cache} is the run's own ${own} in --out: give --cache another name`);
    if (`${cache}.lock` === path.join(outReal, 'run.lock')) throw new UsageError(`--cache ${values.cache}: its lock, ${values.cache}.lock, would be the run's own run.lock in --out: give --cache another name`);
  }
  // A run in progress there is said first: what it holds, and --resume or --force, are not this command's to weigh.
  if (main && outStat !== null) await lockRun(out);
  const checkpoint = path.join(out, 'checkpoint.safetensors');
  const earlier = await runFilesIn(out);
  // --auto-resume: one command for a launcher's first start and its restarts (torchrun --max-restarts, Slurm --requeue).
  const auto = values['auto-resume'] === true;
  if (auto && (values.resume || values.force)) throw new UsageError(`--auto-resume decides between --resume and a new run itself: drop --${values.resume ? 'resume' : 'force'}`);
  if (values.resume && values.init !== undefined) throw new UsageError("--init starts a new run from a model's weights and --resume continues the run in --out: give one of them");
  if (values.resume || (auto && earlier.includes('checkpoint.safetensors'))) {
    if (values.force) throw new UsageError('--resume continues a run and --force replaces it: give one of them');
    if (!earlier.includes('checkpoint.safetensors')) {
      if (!(await fs.stat(out).catch(() => null))) {
        throw new UsageError(`--resume: ${out}${values.out === undefined ? ' (the default --out)' : ''} does not exist: there is no run there to continue (without --resume a run starts)`);
      }
      throw new UsageError(`--resume: ${out} holds no checkpoint to continue from (a run writes ${checkpoint} every --checkpoint-every steps and at each epoch's end); --force starts the run again`);
    }
    if (main) await lockRun(out);
    const { data, config, start } = await resumeRun(values, spec, checkpoint, device, distributed);
    warnOfIdleSettings(values, config, distributed, knnEvery);
    checkKnnData(knnEvery, spec, data);
    if (main) await removeRunTemporaries(out);
    return { resumed: true, start };
  }
  // The flags' own mistakes first: they are said whatever --out holds.
  if (values['rescale-batch'] && !auto) throw new UsageError('--rescale-batch applies to a run resumed (--resume, --auto-resume): a new run takes --batch as it is');
  // Its weights on the CPU until the run's model is made from them (on the run's device), then let go.
  const base = await configFile(values); // --config's options, read once
  const init = typeof values.init === 'string' ? await initModel(values.init, values, base).catch((err: Error) => Promise.reject(err instanceof UsageError ? err : errorFrom(`--init: ${err.message}`, err))) : null;
  const config = newRunConfig(values, base, init);
  if (init && main) console.error(`pirl: the run starts from the weights of ${values.init}`); // said: nothing else shows it
  const size = folderSize(values, config.sampler, spec);
  layoutFlag(values);
  // A run with no checkpoint yet (stopped before its first) has nothing to continue: --auto-resume starts it again,
  // but never over a model (a finished run's, or one put there), which only --force replaces.
  const kept = (files: string[]) => (values.force ? [] : auto ? files.filter((f) => f === 'model.safetensors') : files);
  if (kept(earlier).length > 0 && main) throw holdsRun(out, earlier, auto);
  warnOfIdleSettings(values, config, distributed, knnEvery);
  // The data first: a folder that cannot be read (or whose --layout is unclear) leaves --out as it was.
  const data = await openData(spec, size, values);
  checkKnnData(knnEvery, spec, data); // before the bank's pass over the data
  // Once the run is found to fit its data, an earlier run in --out goes (--force), before the long work
  // begins: nothing of it is left to resume if this one stops before its first checkpoint.
  const onChecked = async () => {
    if (!main) return;
    await makeOutputDir('out', out);
    await lockRun(out);
    // A run that began in --out since it was looked at (and has ended, or the lock would be its) is not this one's to replace.
    const since = await runFilesIn(out);
    if (kept(since).length > 0) throw holdsRun(out, since, auto);
    await Promise.all(RUN_OUTPUTS.map((f) => fs.rm(path.join(out, f), { force: true })));
    await removeRunTemporaries(out);
    await log.clear();
  };
  // bankInit 'features' embeds the data set (each rank a shard; rank 0's shown) before the first step: minutes on a large folder.
  const prepared = new Progress();
  const share = distributed ? ` (rank 0's share of ${distributed.worldSize})` : '';
  const onBankInit = main ? prepared.images(`memory bank from features${share}:`) : undefined;
  return {
    resumed: false,
    start: () => withLibraryFlags(values, 'the default', () => Trainer.create(data, config, { distributed, cudaGraphs: cudaGraphsFlag(values), init: init ?? undefined, onBankInit, onChecked }))
      .finally(() => init?.dispose()),
  };
}

export async function train(args: string[]): Promise<number | void> {
  const distributed = distributedFromEnvFlag();
  // A rank's mistake in its flags (a typo) is told to the others too, which would otherwise wait for it up to the timeout.
  const { values, positionals, nproc, knnEvery, checkpointEvery } = await beforeJoining(distributed, async () => {
    const parsed = parseFlags(args, TRAIN_FLAGS, 1, 'train needs one <data> argument');
    cudaGraphsFlag(parsed.values); // both given: said before any work
    if (parsed.values.deterministic) setDeterministic(true); // before any GPU work: cuBLAS reads its workspace setting once
    const knnEvery = checkFlag(parsed.values, 'knn-every', 0, (a, v) => checkInteger(a, v, 0));
    // Before the folder is read (a --cache built): its labels come from class folders, which flat reads none of.
    if (knnEvery > 0 && parsed.values.layout === 'flat') throw new UsageError('--knn-every needs labeled data: --layout flat reads the folder as unlabeled images; give --layout classes, or leave it out');
    return {
      ...parsed,
      nproc: checkFlag(parsed.values, 'nproc', 1, (a, v) => checkInteger(a, v, 1, 1024)),
      knnEvery,
      checkpointEvery: checkFlag(parsed.values, 'checkpoint-every', 100, (a, v) => checkInteger(a, v, 1)),
    };
  });
  if (nproc > 1) {
    if (distributed) throw new UsageError('--nproc starts the ranks itself: do not combine it with a launcher that sets WORLD_SIZE (torchrun)');
    if (values['cuda-graphs']) throw new UsageError('--cuda-graphs: not in a data-parallel run (--nproc); its gradient all-reduce is driven from the host');
    runFlags(values); // --device and --threads checked here as each rank will, said once
    // Each rank a process with its own libtorch (~100 MB) and its own loader: more than the cores only contend (100 ranks
    // on 2 cores took 40 s and 7 GB to start), on the CPU or beside GPUs.
    const cores = os.availableParallelism();
    if (nproc > cores) console.error(`pirl: warning: --nproc ${nproc} on ${cores} cores: each rank gets less than a core and they contend (one rank per core at most trains fastest)`);
    const i = args.indexOf('--nproc');
    const rest = i >= 0 ? [...args.slice(0, i), ...args.slice(i + 2)] : args.filter((a) => !a.startsWith('--nproc='));
    return launchLocalRanks(nproc, ['train', ...rest]);
  }
  const main = (distributed?.rank ?? 0) === 0; // rank 0 (or a process alone) writes the run's files and reports
  const out = typeof values.out === 'string' ? values.out : 'pirl-run';
  const checkpoint = path.join(out, 'checkpoint.safetensors');
  const log = new MetricsLog(out);
  const spec = positionals[0];
  const signals = stopOnSignals(checkpoint, main); // from here: the work before the first step can take minutes
  // What this rank checks before it joins the others: should it fail, they hear of it when joining instead of waiting.
  const run = await beforeJoining(distributed, () => planRun(values, spec, out, log, applyRunFlags(values).device, distributed, knnEvery));
  const trainer = await run.start();
  const logged: Line[] = run.resumed && main ? await log.truncate(trainer.progress) : []; // a resumed run's metrics so far: its curves go on from them
  // --knn-every is this command's, not the run's: a resume that leaves it out scores no more epochs, said.
  const scored = logged.filter((l) => l.type === 'epoch' && l.knn !== undefined).map((l) => l.epoch + 1);
  if (!knnEvery && scored.length > 0) {
    const every = scored.length > 1 ? scored[1] - scored[0] : scored[0];
    console.error(`pirl: warning: the run scored kNN at its epochs' ends before (--knn-every ${every}); without --knn-every this resume scores none`);
  }
  signals.attach(trainer);
  // Stopped before the run's end: by a signal of its own, or without one when another rank was told to stop and every
  // rank stopped with it. A stop that came in the run's last step ends a finished run: no code, no resume to say.
  let stoppedEarly = false;
  const stoppedCode = () => (stoppedEarly ? signals.code() ?? STOPPED_WITH_A_RANK : undefined);
  if (!main) {
    await trainer.fit({ checkpoint, callbacks: { onTrainEnd: (l) => void (stoppedEarly = l.stopped) } }); // the replicas follow rank 0, which reports and writes the files
    signals.detach();
    return stoppedCode();
  }
  const data = trainer.loader.dataset;
  const knnSets = knnEvery ? await knnSplit(data, spec, undefined, 0, values) : null;
  // The protocol's k (ImageNet's ~1,300 images a class) on a small folder votes mostly across classes: its scores run
  // low, which is the monitor's trend still, but not what a smaller k would score.
  const { k } = KNN_DEFAULTS;
  const largest = knnSets ? largestClass(knnSets.train) : Infinity;
  if (k > largest) {
    console.error(`pirl: note: --knn-every votes with k=${k} (the protocol's), more than the ${largest} images of the largest class that votes: ` +
      `each vote counts other classes' images too, so its scores run below a smaller k's (pirl eval --k ${largest} scores a checkpoint so)`);
  }
  const lossCurve: Array<[number, number]> = logged.flatMap((l) => (l.type === 'batch' ? [[l.step, l.loss] as [number, number]] : []));
  const knnCurve: Array<[number, number]> = logged.flatMap((l) => (l.type === 'epoch' && l.knn !== undefined ? [[l.epoch + 1, l.knn] as [number, number]] : []));
  const epochEnds: number[] = logged.flatMap((l) => (l.type === 'epoch' ? [(l.epoch + 1) * trainer.stepsPerEpoch] : []));
  // A picture of the metrics file: one that cannot be written is said once, and the run goes on (at an epoch's end a
  // throw cost the epoch's checkpoint).
  let curvesWarned = false, curvesDrawn = true;
  const drawCurves = () => writeCurves(path.join(out, 'curves.png'), lossCurve, knnCurve, epochEnds).then(() => void (curvesDrawn = true), (err: Error) => {
    if (!curvesWarned) console.error(`pirl: warning: ${err.message} (the training curves, not drawn: training is not affected)`);
    curvesWarned = true;
    curvesDrawn = false;
  });
  const progress = new Progress();
  const started = Date.now();
  const firstStep = trainer.progress.step; // a resumed run has done steps before this process
  let total = 0, taken = 0; // steps taken by this process (a batch of unreadable images only is skipped)
  let lastLoss = NaN, lastKnn: number | undefined;
  // Which of the run's files this command writes: those whose time changes (a resume that takes no step, or only
  // ends an epoch, writes some).
  const modified = async (file: string) => (await fs.stat(file).catch(() => null))?.mtimeMs ?? null;
  const updated = [checkpoint, log.jsonl, log.csv];
  const before = await Promise.all(updated.map(modified));
  // Epoch `epoch`'s kNN (undefined where a stop asked meanwhile ended the pass at its batch: the checkpoint is written
  // at once, not after it).
  // At an epoch's end the host's other ranks wait at the vote: the pass takes their threads (not before the first step, when they train).
  const scoreKnn = async (epoch: number, atEpochEnd: boolean): Promise<number | undefined> => {
    if (signals.signal.aborted) return undefined;
    const pass = () => knnAccuracy(trainer.model, knnSets!.train, knnSets!.test, { size: trainer.config.sampler.imageSize, signal: signals.signal },
      progress.images(`epoch ${epoch + 1}: kNN features`, false));
    const knn = await (atEpochEnd ? withHostThreads(pass) : pass()).catch((err: Error & { code?: string }) => {
      if (err.code !== 'ABORT_ERR') throw err;
      return undefined;
    });
    if (knn !== undefined) {
      knnCurve.push([epoch + 1, knn]);
      lastKnn = knn;
    }
    return knn;
  };
  // A stop in an epoch's last step or its kNN pass left the epoch unscored, its checkpoint at the epoch's end: scored
  // now, on the weights it would have been scored on (a kill never loses it).
  const { epoch: resumedAt, stepInEpoch } = trainer.progress;
  if (knnEvery && stepInEpoch === 0 && resumedAt > 0 && resumedAt % knnEvery === 0 &&
      logged.some((l) => l.type === 'epoch' && l.epoch === resumedAt - 1 && l.knn === undefined)) {
    const knn = await scoreKnn(resumedAt - 1, false);
    if (knn !== undefined) {
      progress.update(`epoch ${resumedAt}: kNN top-1 ${(knn * 100).toFixed(2)}% (left unscored by the stop before this resume)`, true);
      await log.scoreEpoch(resumedAt - 1, knn);
    }
  }
  await trainer.fit({
    checkpoint,
    checkpointEvery,
    callbacks: {
      onTrainEnd: (l) => void (stoppedEarly = l.stopped),
      onTrainBegin: (i) => {
        total = i.epochs * i.stepsPerEpoch;
        // Said at once: a paper-preset step on one thread took 40 s, silent after the bank's pass.
        if (firstStep < total) progress.update(`epoch ${Math.floor(firstStep / i.stepsPerEpoch) + 1}/${i.epochs} step ${firstStep + 1}/${total}: under way`, false);
      },
      onBatchEnd: async (l) => {
        taken++;
        lossCurve.push([l.step, l.loss]);
        lastLoss = l.loss;
        const eta = ((Date.now() - started) / 1000 / (l.step - firstStep)) * (total - l.step);
        progress.update(`epoch ${l.epoch + 1}/${trainer.config.epochs} step ${l.step}/${total} loss ${l.loss.toFixed(4)} lr ${l.lr.toExponential(2)} ${rate(l.imagesPerSecond)} img/s ETA ${formatDuration(eta)}`, false);
        await log.batch(l);
      },
      onEpochEnd: async (l) => {
        const knn = knnEvery && (l.epoch + 1) % knnEvery === 0 ? await scoreKnn(l.epoch, true) : undefined;
        progress.update(`epoch ${l.epoch + 1}/${trainer.config.epochs} loss ${l.loss.toFixed(4)}${Number.isNaN(l.imagesPerSecond) ? '' : ` ${rate(l.imagesPerSecond)} img/s`}${knn === undefined ? '' : ` kNN top-1 ${(knn * 100).toFixed(2)}%`}`, true);
        await log.epoch({ ...l, knn });
        epochEnds.push(trainer.progress.step);
        await drawCurves();
      },
    },
  }).catch(async (err: Error) => {
    // A rank lost (killed, its host gone): the run goes on from its last checkpoint, as after Ctrl-C.
    if (distributed && err.message.startsWith('distributed training:') && (await fs.access(checkpoint).then(() => true, () => false))) {
      // Its step, where a stop asked meanwhile said it would write one after the step that failed.
      const at = await readSafetensorsMetadata(checkpoint).then((m) => ` (at step ${JSON.parse(m['pirl-checkpoint']).position.step})`).catch(() => '');
      console.log(`stopped: continue from ${checkpoint}${at} with ${resumeCommand(args, distributed)}`);
    }
    throw err;
  });
  signals.detach(); // trained: what is left is written atomically, and a signal now quits
  await trainer.model.save(path.join(out, 'model.safetensors'));
  await drawCurves(); // a run stopped mid-epoch, or resumed complete, too
  const steps = trainer.progress.step - firstStep;
  if (steps === 0 && trainer.progress.epoch >= trainer.config.epochs) console.log(`the run in ${out} was already complete (${trainer.config.epochs} epochs): nothing to train (--epochs N, more than ${trainer.config.epochs}, trains it on)`);
  const skipped = steps - taken > 0 ? ` (${steps - taken} skipped: their batches held no readable image)` : '';
  console.log(`trained ${steps} step(s)${skipped} in ${formatDuration((Date.now() - started) / 1000)}, to step ${trainer.progress.step} of ${total || trainer.progress.step}` +
    `${Number.isNaN(lastLoss) ? '' : `; last loss ${lastLoss.toFixed(4)}`}${lastKnn === undefined ? '' : `; kNN top-1 ${(lastKnn * 100).toFixed(2)}%`}`);
  const unreadable = unreadableOf(data).length;
  const cached = data instanceof ImageFolder && data.leftOut > 0;
  if (unreadable > 0) {
    console.error(`pirl: warning: ${unreadable} of the ${imagesFound(data)} images of ${spec} ${unreadable === 1 ? 'was' : 'were'} skipped (said above: unreadable, or over --max-pixels) and left out` +
      (cached ? ' of the data set' : ' of their batches (--cache FILE leaves them out of the data set: every batch full)'));
  }
  // What this command wrote: its model and curves, and of the run's other files those it changed (a run stopped before
  // its first step logged none, nor checkpointed; one resumed complete, neither).
  const after = await Promise.all(updated.map(modified));
  const changed = updated.filter((_, i) => after[i] !== null && after[i] !== before[i]);
  const curves = path.join(out, 'curves.png');
  const drawn = curvesDrawn ? await fs.access(curves).then(() => [curves], () => []) : []; // none of a run that logged nothing
  console.log(`wrote ${[path.join(out, 'model.safetensors'), ...changed, ...drawn].join(', ')}`);
  const code = stoppedCode();
  if (code !== undefined && signals.code() === undefined) console.error('pirl: stopped with the other ranks: one of them was told to stop (a signal reached it)');
  if (code !== undefined) console.log(`interrupted: continue with ${resumeCommand(args, distributed)}`);
  return code;
}
