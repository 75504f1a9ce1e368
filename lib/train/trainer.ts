// The PIRL training loop: SGD with warm-up and cosine decay over native steps, callbacks, atomic
// checkpoints and exact resume (docs/PIRL.md, "Optimisation").
import { promises as fs } from 'fs';

import { binding, type StepResult, type TrainerHandle } from '../binding';
import {
  PAPER_BATCH_SIZE, TRAIN, checkDevice, distributedFromEnv, resolveDistributedOptions, resolveTrainConfig, type Device, type DistributedOptions,
  type ResolvedDistributedOptions, type ResolvedTrainConfig, type TrainConfig,
} from '../config';
import { Subset, checkDataset, type Dataset } from '../data/datasets';
import { ImageFolder, type FolderRead } from '../data/imageFolder';
import { dataDigest, folderOf, folderRead, type DataDigest } from '../data/digest';
import { Loader, disposeBatch, type PirlBatch } from '../data/loader';
import { checkBoolean, checkFile, checkFunctions, checkInteger, checkNumber, checkObject, checkOptions, errorFrom, isArgumentError, nativeCall, rangeError, typeError, unknownOptionError } from '../errors';
import { featureBatches } from '../eval/knn';
import { MemoryBank } from '../memoryBank';
import { PirlModel, checkModel, checkTensorsFitOptions } from '../model';
import { makeFolderFor, metadataField, readSafetensors, removeStaleTemporaries, temporaryFor, writeSafetensors } from '../safetensors';
import type { DeepReadonly } from '../schema';
import { Tensor, disposeAll, handleOf } from '../tensor';
import { CHECKPOINT_FORMAT, checkpointMeta, type CheckpointMeta, type EpochSoFar, type Position } from './checkpoint';
import { beforeJoining, joinGroup, runTerms } from './rendezvous';
import { lrOfSteps, warnOfWarmupSpanningRun, type LrSchedule } from './schedule';

export interface BatchLogs {
  /** The epoch, from 0 (as progress.epoch). */
  epoch: number;
  /** The run's steps so far, this one included (1 after the first; progress.step after it). */
  step: number;
  loss: number;
  lossImage: number;
  lossJigsaw: number;
  lr: number;
  gradNorm: number;
  /** false when fp16 gradients overflowed: the step was skipped and the loss scale halved. */
  applied: boolean;
  /** The step replayed its captured CUDA graph (option cudaGraphs; false for the steps that capture it). */
  replayed: boolean;
  /** The whole run's: in a data-parallel run this rank's images × the world size. */
  imagesPerSecond: number;
}

export interface EpochLogs {
  /** The epoch that ended, from 0. */
  epoch: number;
  loss: number;
  /** The whole run's, as in BatchLogs; NaN for an epoch this process took no step of (resumed at its end). */
  imagesPerSecond: number;
}

/** `false` from onBatchEnd or onEpochEnd stops training there, as `trainer.stop()` does. */
type Continue = void | boolean | Promise<void | boolean>;

export interface Callbacks {
  onTrainBegin?(info: { epochs: number; stepsPerEpoch: number }): void | Promise<void>;
  onEpochBegin?(epoch: number): void | Promise<void>;
  onBatchEnd?(logs: BatchLogs): Continue;
  onEpochEnd?(logs: EpochLogs): Continue;
  /** `stopped`: training ended early (stop() or a callback's false), not at config.epochs. */
  onTrainEnd?(logs: { epochs: number; steps: number; stopped: boolean }): void | Promise<void>;
}

const FIT_OPTIONS = ['callbacks', 'checkpoint', 'checkpointEvery'];
const CALLBACKS = ['onTrainBegin', 'onEpochBegin', 'onBatchEnd', 'onEpochEnd', 'onTrainEnd'] as const satisfies ReadonlyArray<keyof Callbacks>;

// A misspelt callback would never be called, and one that is not a function would fail after a step. Callbacks keep their
// own state and helpers beside them (`this.count`, an object's or a class's): a name of theirs that reads as a callback
// (on + a capital, or a callback's name in other case) and is none is refused.
function checkCallbacks(callbacks: unknown): Callbacks {
  const cb = checkObject('options.callbacks', callbacks);
  const names = new Set(Object.keys(cb));
  for (let p = Object.getPrototypeOf(cb); p !== null && p !== Object.prototype; p = Object.getPrototypeOf(p)) {
    for (const name of Object.getOwnPropertyNames(p)) names.add(name);
  }
  const known = CALLBACKS as readonly string[];
  for (const name of names) {
    const callbackLike = /^on[A-Z]/.test(name) || known.some((c) => c.toLowerCase() === name.toLowerCase());
    if (callbackLike && !known.includes(name)) throw unknownOptionError('options.callbacks', name, CALLBACKS);
  }
  checkFunctions('options.callbacks', cb, CALLBACKS);
  return cb as Callbacks;
}

export interface FitOptions {
  callbacks?: Callbacks;
  /** Write a checkpoint here every `checkpointEvery` steps and at the end of each epoch. */
  checkpoint?: string;
  checkpointEvery?: number;
}

/** Said, not refused (negatives are drawn with replacement): K from fewer rows repeats rows in every draw. */
function warnOfNegativesBeyondBank(negatives: number, rows: number): void {
  if (negatives <= rows) return;
  process.emitWarning(`loss.negatives is ${negatives}, more than the memory bank's ${rows} rows (one per sample): each draw repeats ` +
    `rows (~${Math.round(negatives / rows)}× each), weighing them more rather than seeing more of the data; K is usually well ` +
    `below the data set's size (the paper: 32,000 of 1,281,167; pirl train --negatives)`, { code: 'PIRL_NEGATIVES_BEYOND_BANK' });
}

/**
 * Said, not refused: recipe 'paper' sets the batch of one process, the paper's 1024 (32 per GPU on 32 GPUs) is the
 * batch of all ranks together — N ranks of the recipe's 1024 train on N·1024 at N times the lr. Another batch was
 * chosen, and is not second-guessed.
 */
function warnOfPaperBatchAcrossRanks(c: ResolvedTrainConfig, worldSize: number): void {
  const paper = PAPER_BATCH_SIZE;
  if (c.recipe !== 'paper' || worldSize === 1 || c.batchSize !== paper) return;
  const fix = paper % worldSize === 0 ? `batchSize ${paper / worldSize} (pirl train --batch ${paper / worldSize}) gives the paper's ${paper}` : `${worldSize} ranks cannot split it evenly`;
  process.emitWarning(`recipe 'paper': the paper's batch of ${paper} is all ranks' together, this run's is ${worldSize} ranks × ${c.batchSize} = ` +
    `${c.batchSize * worldSize} (and its lr, baseLr·batch/256, scaled to that): ${fix}`, { code: 'PIRL_PAPER_BATCH' });
}

/**
 * How this process takes part in a run: alone (the default), or as one rank of a data-parallel run —
 * `'env'` reads torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; docs/distributed.md).
 */
export interface ProcessOptions {
  distributed?: DistributedOptions | 'env' | null;
  /**
   * Capture the step's forward, loss and backward once as a CUDA graph and replay it: one launch per step
   * instead of ~10³, which otherwise bound a small model's step by the CPU (on the H200: ResNet-18 at 96 px
   * 3.2× faster, ResNet-50 bf16 1.27×). Default: on for a CUDA run of one process whose Z stays put (not
   * NCE's loss.z 'ema', which would change the graph every step); off on the CPU and in data-parallel runs.
   * true insists (refused where it cannot be), false turns it off. Recaptured when the batch's shape, NCE's Z
   * or the TF32, cuDNN and determinism settings (setTf32, setDeterministic) change. A setting of this process, like its
   * threads: not saved in checkpoints.
   */
  cudaGraphs?: boolean;
}

/** What create() takes besides the process: where the model starts, a report of the work before the first step. */
export interface CreateOptions extends ProcessOptions {
  /**
   * A model whose weights (and BatchNorm statistics) the run starts from instead of a new model's: one trained before
   * (`PirlModel.load` of a run's model or checkpoint: a folder that has grown since, which that run cannot resume
   * over), or a trunk imported into a new model (`importTrunk`). Copied: the model given is left as it is. Its arch,
   * stem, width and embeddingDim are the run's (taken where config.model leaves them out; another is refused). The
   * memory bank is new: with bankInit 'features', these weights' features.
   */
  init?: PirlModel;
  /** Called as bankInit 'features' embeds the data set (a rank its shard): images done of all (minutes for a large folder), first 0 as it begins. */
  onBankInit?: (done: number, total: number) => void;
  /** Called once the data, config and options are found to fit together (and the ranks of a data-parallel run to agree), before the bank is filled (the CLI replaces an earlier run then). */
  onChecked?: () => void | Promise<void>;
}

/** What resume() may change about a run: where it continues (e.g. a CUDA run resumed on the CPU), and its length. */
export interface ResumeOptions extends ProcessOptions {
  device?: Device;
  /**
   * The run's new length in epochs (at least the epochs it has begun): a finished run trains on, or a run ends
   * sooner. From here on its lr follows the schedule of a run of this length, so it is not the run that this
   * length from the start would have been; its checkpoints record the new length.
   */
  epochs?: number;
  /**
   * Resumes on another number of ranks than the run trained on (a lost node, a smaller allocation): each rank's
   * batchSize rescaled so the global batch stays the run's (its order, steps, lr schedule and negatives stay the
   * run's too); refused where the new number does not divide it. Not exact: each rank's BatchNorm normalises over
   * a batch of another size (with syncBatchNorm, over the same global batch: the run's steps to float rounding).
   * Its checkpoints record the new world size and batch. Default false: a run resumes on as many ranks only.
   */
  rescaleBatch?: boolean;
}

/** How this process trains: alone or as a rank, on which device (a rank's own GPU for device 'cuda'), with CUDA graphs or not. */
interface Process {
  distributed: ResolvedDistributedOptions | null;
  device: Device;
  cudaGraphs: boolean;
}

// The options' group, checked first (with what is wrong in the options alone): a rank that fails after this tells the others (beforeJoining).
function groupOf(options: ProcessOptions, known: readonly string[]): ResolvedDistributedOptions | null {
  checkOptions('options', options, known);
  const d = options.distributed;
  const resolved = d === undefined || d === null ? null : d === 'env' ? distributedFromEnv() : resolveDistributedOptions(d);
  const group = resolved !== null && resolved.worldSize > 1 ? resolved : null; // one rank trains alone
  if (options.cudaGraphs === true && group) throw rangeError('options.cudaGraphs', 'false in a data-parallel run (its gradient all-reduce is driven from the host)', true);
  return group;
}

function resolveProcess(options: ProcessOptions, c: ResolvedTrainConfig, group: ResolvedDistributedOptions | null): Process {
  const device = c.device;
  const zMoves = c.loss.mode === 'nce' && c.loss.z === 'ema';
  const cudaGraphs = options.cudaGraphs === undefined ? device !== 'cpu' && !group && !zMoves : checkBoolean('options.cudaGraphs', options.cudaGraphs);
  if (cudaGraphs && zMoves) {
    throw rangeError('options.cudaGraphs', "false with loss.mode 'nce' and loss.z 'ema' (a captured step holds Z fixed: use loss.z 'frozen', or InfoNCE)", true);
  }
  if (cudaGraphs && device === 'cpu') throw rangeError('options.cudaGraphs', "false on the CPU (CUDA graphs need device 'cuda')", true);
  if (!group) return { distributed: null, device, cudaGraphs };
  if (device === 'cpu' && !binding.buildInfo().gloo) {
    throw rangeError('options.distributed', "null on this host: ranks on the CPU need Gloo, and this pirl was built without its headers " +
      '(Debian/Ubuntu: apt-get install libgloo-dev, then rebuild: node scripts/build.js; `pirl info` says what was compiled)', 'a rank');
  }
  if (device === 'cpu') return { distributed: group, device, cudaGraphs };
  if (!binding.buildInfo().nccl) {
    throw rangeError('config.device', "'cpu' for data-parallel training: ranks on GPUs need NCCL, and this pirl was built without it " +
      '(a CUDA libtorch with NCCL and nccl.h; `pirl info` says what was compiled)', device);
  }
  // One GPU per rank of a host: an index given would put every rank of the host on it.
  if (device !== 'cuda') throw rangeError('config.device', "'cuda' in a data-parallel run (each rank trains on its own GPU: cuda:LOCAL_RANK)", device);
  const localRank = group.localRank ?? (group.localWorldSize === null ? group.rank : group.rank % group.localWorldSize);
  // A view of one GPU of its own: the launcher bound it (one device in CUDA_VISIBLE_DEVICES), or the rank is its host's only one.
  const ownGpu = process.env.CUDA_VISIBLE_DEVICES?.split(',').filter((d) => d.trim() !== '').length === 1 || group.localWorldSize === 1;
  return { distributed: group, device: rankGpu(localRank, binding.buildInfo().cudaDeviceCount, ownGpu), cudaGraphs };
}

/**
 * A rank's GPU: cuda:LOCAL_RANK of its host's, or the one it sees where the launcher shows each rank its own (Slurm's
 * --gpus-per-task or --gpu-bind, a container per rank: `ownGpu`) while LOCAL_RANK still counts the host's ranks.
 */
export function rankGpu(localRank: number, visible: number, ownGpu: boolean): Device {
  if (localRank < visible) return `cuda:${localRank}`;
  if (visible === 1 && ownGpu) return 'cuda:0';
  throw rangeError('options.distributed.localRank', `below the ${visible} GPU(s) this rank sees (each rank trains on its own GPU, ` +
    "cuda:LOCAL_RANK, or the one CUDA_VISIBLE_DEVICES shows it: start at most one rank per GPU, or check the launcher's GPU binding)", localRank);
}

// The run's config, frozen to its leaves: a field changed afterwards would not change training but would be
// written to its checkpoints (a resume then inexact, or refused).
function frozen<T extends object>(o: T): DeepReadonly<T> {
  for (const v of Object.values(o)) if (typeof v === 'object' && v !== null) frozen(v);
  return Object.freeze(o) as DeepReadonly<T>;
}

export class Trainer {
  readonly config: DeepReadonly<ResolvedTrainConfig>;
  /** This process's place in a data-parallel run; null when it trains alone. */
  readonly distributed: Readonly<ResolvedDistributedOptions> | null;
  /** Where this process trains: config.device, or for a rank with device 'cuda' its own GPU (cuda:LOCAL_RANK). */
  readonly device: Device;
  /** Whether its steps are replayed from CUDA graphs (option cudaGraphs; each step's `replayed` says which were). */
  readonly cudaGraphs: boolean;
  private position: Position = { epoch: 0, stepInEpoch: 0, step: 0 };
  private stopRequested = false;
  // Ends fit's wait for a batch when stop() is asked meanwhile (a Dataset that never answers would hold it forever).
  private onStop: (() => void) | null = null;
  private fitting = false;
  private releasing: Promise<void> | null = null;
  private epochSoFar: EpochSoFar = { lossSum: 0, images: 0 };
  private readonly handle: TrainerHandle;
  // Steps and checkpoint writes take turns: a save() asked during fit() waits for the step in progress (a file
  // written while a step changes the weights, momentum and bank resumed inexactly).
  private turn: Promise<unknown> = Promise.resolve();
  // The run's own reference to its model: `model` disposed by the caller mid-run still checkpoints and fills the bank.
  private readonly own: PirlModel;

  private constructor(
    readonly model: PirlModel,
    readonly bank: MemoryBank,
    readonly loader: Loader,
    config: ResolvedTrainConfig,
    place: Process,
    private readonly data: DataDigest,
  ) {
    this.distributed = place.distributed;
    this.device = place.device;
    this.cudaGraphs = place.cudaGraphs;
    this.config = frozen(config);
    model.imageSize = config.sampler.imageSize; // what its file says to evaluate at
    this.own = model.retain();
    this.handle = new binding.TrainerHandle(model.handle, bank.handle, config.loss, {
      momentum: config.momentum, weightDecay: config.weightDecay, precision: config.precision, seed: config.seed, cudaGraphs: place.cudaGraphs,
    });
  }

  /**
   * A new run over `dataset`: a model and a bank of one row per sample on config.device, seeded by
   * config.seed. As a rank of a data-parallel run it waits for every rank, then starts from rank 0's
   * weights and bank; config.batchSize is then each rank's share of the global batch.
   */
  static async create(dataset: Dataset, config: TrainConfig = {}, options: CreateOptions = {}): Promise<Trainer> {
    const group = groupOf(options, ['distributed', 'cudaGraphs', 'init', 'onBankInit', 'onChecked']);
    const trainer = await beforeJoining(group, async () => {
      const init = options.init === undefined ? null : checkModel('options.init', options.init);
      if (init?.disposed) throw typeError('options.init', 'a PirlModel not disposed', init);
      const c = resolveTrainConfig(config, 'config', false, init ? { options: init.options, name: 'options.init' } : undefined);
      const place = resolveProcess(options, c, group);
      checkFunctions('options', options as Record<string, unknown>, ['onBankInit', 'onChecked']);
      const loader = Trainer.loaderFor(dataset, c, place);
      if ((group?.rank ?? 0) === 0) {
        warnOfWarmupSpanningRun(c.warmupEpochs, c.epochs);
        warnOfNegativesBeyondBank(c.loss.negatives, dataset.length);
        warnOfPaperBatchAcrossRanks(c, group?.worldSize ?? 1);
      }
      const model = await PirlModel.create(c.model, { device: place.device });
      try {
        if (init) await startFrom(model, init);
        const bank = await MemoryBank.create({ size: dataset.length, dim: c.model.embeddingDim, seed: c.seed, device: place.device });
        return new Trainer(model, bank, loader, c, place, dataDigest(dataset));
      } catch (err) {
        model.dispose(); // its memory and thread now, not at a collection
        throw err;
      }
    });
    await trainer.joinRanks();
    await options.onChecked?.();
    if (trainer.config.bankInit === 'features') await trainer.fillBankWithFeatures(dataset, options.onBankInit);
    return trainer;
  }

  /**
   * m_y ← f̂_y of the starting model (eval transform) for every sample; rows of undecodable images keep their
   * random start. The ranks of a data-parallel run each embed a shard, then exchange them.
   */
  private async fillBankWithFeatures(dataset: Dataset, onProgress?: (done: number, total: number) => void): Promise<void> {
    const [begin, end] = this.handle.bankShard();
    const shard = end - begin === dataset.length ? dataset : new Subset(dataset, Array.from({ length: end - begin }, (_, i) => begin + i));
    const options = { size: this.config.sampler.imageSize, layer: 'f' as const };
    for await (const { features, indices } of featureBatches(this.own, shard, options, onProgress)) {
      await this.bank.update(indices.map((i) => begin + i), features, 0);
    }
    await nativeCall(() => this.handle.shareBankShards());
  }

  private static loaderFor(dataset: Dataset, c: ResolvedTrainConfig, { distributed, device }: Process): Loader {
    try {
      return new Loader(dataset, {
        batchSize: c.batchSize, seed: c.seed, config: c.sampler, dropLast: true, device, epochLength: c.epochLength,
        ...(distributed ? { shard: { rank: distributed.rank, count: distributed.worldSize } } : {}),
      });
    } catch (err) {
      // The Loader names its own option: the run's is config.batchSize.
      if (isArgumentError(err) && err.argument === 'options.batchSize') throw rangeError('config.batchSize', err.expected, err.received);
      throw err;
    }
  }

  // The rendezvous, the ranks' agreement on the run, and rank 0's state (native, off the JavaScript thread: it waits for every rank).
  private async joinRanks(): Promise<void> {
    const d = this.distributed;
    if (!d) return;
    await joinGroup(this.handle, d, this.device, runTerms(this.config, this.data, this.position.step, d.worldSize), this.config.syncBatchNorm);
  }

  /** The ranks training together (1 alone). */
  get worldSize(): number {
    return this.distributed?.worldSize ?? 1;
  }

  /** Whether this process writes checkpoints and reports: rank 0, or a process alone. */
  get isMain(): boolean {
    return (this.distributed?.rank ?? 0) === 0;
  }

  get stepsPerEpoch(): number {
    return this.loader.batchesPerEpoch;
  }

  get schedule(): LrSchedule {
    return {
      baseLr: this.config.baseLr, batchSize: this.config.batchSize * this.worldSize, totalSteps: this.config.epochs * this.stepsPerEpoch,
      warmupSteps: Math.round(this.config.warmupEpochs * this.stepsPerEpoch), finalRatio: this.config.finalLrRatio,
      update: this.config.lrUpdate, stepsPerEpoch: this.stepsPerEpoch,
    };
  }

  /** The step the run continues from. */
  get progress(): Readonly<Position> {
    return { ...this.position };
  }

  /**
   * One step on one batch (exposed for custom loops): the batch moves to the model's device; returns the
   * native step's losses. It counts in `progress` as fit's steps do, so that save() and a resume go on from
   * it; a step past the run's epochs is refused. `stop` votes to end a data-parallel run: `stop` in the
   * result says whether any rank voted, so that every rank ends after the same step.
   */
  async step(batch: PirlBatch, lr: number, stop = false): Promise<StepResult> {
    this.checkLive('step');
    checkNumber('lr', lr, { min: 0 });
    checkBoolean('stop', stop);
    if (this.fitting) throw new Error('trainer.step: fit() is running on this trainer (a step of its own would come between its steps)');
    return this.inTurn(async () => {
      const { epoch, stepInEpoch, step } = this.position;
      if (epoch >= this.config.epochs) {
        throw new RangeError(`trainer.step: the run's ${this.config.epochs} epoch(s) are done (progress.step ${step}): Trainer.resume(file, data, { epochs }) lengthens it`);
      }
      const r = await this.nativeStep(batch, lr, stop);
      const ended = stepInEpoch + 1 === this.stepsPerEpoch; // a custom loop's epochs are fit's: as many steps
      this.position = ended ? { epoch: epoch + 1, stepInEpoch: 0, step: step + 1 } : { epoch, stepInEpoch: stepInEpoch + 1, step: step + 1 };
      return r;
    });
  }

  private inTurn<T>(work: () => Promise<T>): Promise<T> {
    const result = this.turn.then(work);
    this.turn = result.catch(() => undefined);
    return result;
  }

  // Async: a refused batch rejects (fit disposes it then too), as a failed step does.
  private async nativeStep(batch: PirlBatch, lr: number, stop: boolean): Promise<StepResult> {
    const { images, patches, indices } = checkObject('batch', batch);
    const handles = [handleOf('batch.images', images), handleOf('batch.patches', patches), handleOf('batch.indices', indices)] as const;
    const size = this.model.checkViews(images as Tensor, patches as Tensor, 'batch.');
    const rows = indices as Tensor;
    if (rows.dtype !== 'int64') throw typeError('batch.indices', "an int64 Tensor of the batch's bank rows", rows.dtype);
    if (rows.shape.length !== 1 || rows.shape[0] !== size) throw rangeError('batch.indices', `the batch's ${size} bank rows, one per sample`, rows.shape);
    return nativeCall(() => this.handle.step(...handles, lr, stop));
  }
  /**
   * Asks fit() to stop after the step in progress (at once while it waits for a batch) — in a data-parallel
   * run after the next step, on every rank (the ranks agree in it), or at the epoch's end when asked before the
   * ranks' vote there (in onEpochEnd) — writing its checkpoint first, so the run resumes from there.
   * Asked while no fit runs, the next fit stops after its first step.
   */
  stop(): void {
    this.stopRequested = true;
    this.onStop?.();
  }

  // The next batch, or null when stop() is asked while it is awaited: no step is in progress then, and the
  // batch may never come. A rank waits on: it stops with the others, after a step.
  private nextBatch(batches: AsyncGenerator<PirlBatch>): Promise<IteratorResult<PirlBatch> | null> {
    const next = batches.next();
    if (this.distributed) return next;
    return new Promise((resolve, reject) => {
      let abandoned = false;
      this.onStop = () => {
        abandoned = true;
        resolve(null);
      };
      next.then((r) => {
        this.onStop = null;
        if (abandoned && !r.done) disposeBatch(r.value); // came after the stop: no step takes it
        resolve(r);
      }, (err) => { this.onStop = null; reject(err); });
    });
  }

  /** Trains from where the run stands to config.epochs (or a stop); the event loop stays free throughout. */
  async fit(options: FitOptions = {}): Promise<void> {
    this.checkLive('fit');
    // Two fits at once would both step and both move the position.
    if (this.fitting) throw new Error('trainer.fit: this trainer is already fitting (await the fit in progress, or stop() it)');
    this.fitting = true;
    try {
      await this.fitFromPosition(options);
    } finally {
      this.fitting = false;
      this.stopRequested = false; // heard; a stop() asked before a fit stops that fit (Ctrl-C before the first step)
    }
  }

  private async fitFromPosition(options: FitOptions): Promise<void> {
    checkOptions('options', options, FIT_OPTIONS);
    const cb = options.callbacks === undefined ? {} : checkCallbacks(options.callbacks);
    const every = options.checkpointEvery === undefined ? null : checkInteger('options.checkpointEvery', options.checkpointEvery, 1);
    if (options.checkpoint !== undefined) checkFile('options.checkpoint', options.checkpoint);
    if (every !== null && options.checkpoint === undefined) throw rangeError('options.checkpointEvery', 'given with options.checkpoint (how often to write it)', every);
    const lrOf = lrOfSteps(this.schedule); // checked once, asked every step
    // Rank 0 alone writes the run's checkpoints (every replica holds the same state).
    const checkpoint = this.isMain ? options.checkpoint : undefined;
    if (checkpoint) {
      // Before any training: a checkpoint that cannot be written fails now.
      if ((await fs.stat(checkpoint).catch(() => null))?.isDirectory()) throw rangeError('options.checkpoint', 'a file path, not a folder', checkpoint);
      await makeFolderFor(checkpoint);
      await removeStaleTemporaries(checkpoint);
      // A folder that exists but takes no file (a read-only mount) was found at the first save, an epoch in.
      const tmp = temporaryFor(checkpoint);
      await fs.writeFile(tmp, '').then(() => fs.rm(tmp), (err: Error) => {
        throw new Error(`cannot write ${checkpoint}: ${err.message}`);
      });
    }
    await cb.onTrainBegin?.({ epochs: this.config.epochs, stepsPerEpoch: this.stepsPerEpoch });
    let stopping = false;
    while (this.position.epoch < this.config.epochs && !stopping) {
      const epoch = this.position.epoch;
      // A run resumed at its epoch's last step (saved before the epoch's end) only ends that epoch.
      if (this.position.stepInEpoch < this.stepsPerEpoch) await cb.onEpochBegin?.(epoch);
      let images = 0; // this process's, for the throughput
      const epochStart = performance.now();
      let last = epochStart;
      const batches = this.loader.epochFrom(epoch, this.position.stepInEpoch);
      try {
        for (;;) {
          const next = await this.nextBatch(batches);
          if (next === null) {
            stopping = true;
            break;
          }
          if (next.done) break;
          const batch = next.value;
          // The loader leaves out a batch none of whose images could be read: the position (and the
          // lr schedule) follows the batches, so a resumed run continues at the right one.
          if (batch.step !== this.position.stepInEpoch) {
            this.checkInStep();
            this.position = { epoch, stepInEpoch: batch.step, step: epoch * this.stepsPerEpoch + batch.step };
          }
          const lr = lrOf(this.position.step);
          const size = batch.indices.shape[0];
          const { stop: agreed, ...r } = await this.inTurn(async () => {
            const result = await this.nativeStep(batch, lr, this.stopRequested).finally(() => disposeBatch(batch)); // fit's own
            this.epochSoFar = { lossSum: this.epochSoFar.lossSum + result.loss * size, images: this.epochSoFar.images + size };
            this.position = { epoch, stepInEpoch: this.position.stepInEpoch + 1, step: this.position.step + 1 };
            return result;
          });
          const now = performance.now();
          images += size;
          // The callbacks before the checkpoint that says the step is done: what they record (a metrics line) is never
          // lost to a kill in between, and a checkpoint may keep what they computed.
          if ((await cb.onBatchEnd?.({ epoch, step: this.position.step, ...r, lr, imagesPerSecond: (size * this.worldSize * 1000) / (now - last) })) === false) this.stop();
          if (checkpoint && every !== null && this.position.step % every === 0) await this.save(checkpoint);
          last = now;
          // Alone, a stop takes effect now; as a rank, once every rank has heard of it (in a step).
          stopping = this.distributed ? agreed : this.stopRequested;
          if (stopping) break;
        }
      } finally {
        // Not awaited: after a stop it waits for the batch then coming, which may never come. Frees those made ahead.
        batches.return(undefined).catch(() => undefined);
      }
      if (stopping && this.position.stepInEpoch < this.stepsPerEpoch) {
        if (checkpoint) await this.save(checkpoint); // stopped inside the epoch
        break;
      }
      if (this.position.stepInEpoch < this.stepsPerEpoch) this.checkInStep(); // the epoch's last batches left out
      const { lossSum, images: epochImages } = this.epochSoFar;
      // Every batch left out (a Dataset of one's own that gave no sample): said, not a silent epoch of nothing.
      if (epochImages === 0) {
        process.emitWarning(`epoch ${epoch} trained on nothing: none of its ${this.stepsPerEpoch} batch(es) held a readable sample (the data set left every one out)`, { code: 'PIRL_EPOCH_UNTRAINED' });
      }
      this.position = { epoch: epoch + 1, stepInEpoch: 0, step: (epoch + 1) * this.stepsPerEpoch };
      this.epochSoFar = { lossSum: 0, images: 0 };
      const logs = { epoch, loss: epochImages ? lossSum / epochImages : NaN, imagesPerSecond: images ? (images * this.worldSize * 1000) / (performance.now() - epochStart) : NaN };
      if ((await cb.onEpochEnd?.(logs)) === false) this.stop();
      if (checkpoint) await this.save(checkpoint);
      // A stop asked by now (during an epoch-end kNN pass) takes effect here: as a rank, once every rank has voted (the
      // next step's vote came after that step, past this checkpoint). The last epoch's end needs none.
      if (!stopping && this.position.epoch < this.config.epochs) {
        stopping = this.distributed ? await this.inTurn(() => nativeCall(() => this.handle.agreeToStop(this.stopRequested))) : this.stopRequested;
      }
    }
    await cb.onTrainEnd?.({ epochs: this.config.epochs, steps: this.position.step, stopped: this.position.epoch < this.config.epochs });
  }

  // A batch left out (none of its images readable) is a step the other ranks take: as a rank, stop.
  private checkInStep(): void {
    if (!this.distributed) return;
    const { epoch, stepInEpoch, step } = this.position;
    // Step as progress counts it (from 1); batch and epoch as the logs do (from 0).
    throw new Error(`the run's step ${step + 1} (batch ${stepInEpoch} of epoch ${epoch}, from 0) has no readable image on rank ${this.distributed.rank}: ` +
      'the ranks would fall out of step; remove or fix the unreadable files (see the warnings) and resume');
  }

  /**
   * Everything the run changes — model, optimizer momentum, memory bank and its generator, Z, the
   * position and the config (the device included) — as one safetensors file, written atomically. During
   * fit() it is written between two steps.
   */
  async save(file: string): Promise<void> {
    this.checkLive('save');
    checkFile('file', file);
    return this.inTurn(() => this.writeCheckpoint(file));
  }

  /**
   * Lets go of the run's memory now rather than when the trainer is collected: the optimizer's momentum, the
   * memory bank and, in a data-parallel run, its process group — once the step or save() in progress is done;
   * settles when they are released. `model` is the run's result and stays the caller's (dispose it as any
   * model). Refused while fit() runs: stop() it and await the fit first. Every later step, fit or save is an error.
   */
  dispose(): Promise<void> {
    if (this.fitting) return Promise.reject(new Error('trainer.dispose: fit() is running on this trainer (stop() it and await the fit first)'));
    this.releasing ??= this.turn.then(async () => {
      this.bank.dispose();
      this.own.dispose();
      await nativeCall(() => this.handle.dispose());
    });
    return this.releasing;
  }

  get disposed(): boolean {
    return this.releasing !== null;
  }

  private checkLive(call: string): void {
    if (this.releasing) throw new TypeError(`trainer.${call}: the trainer was disposed`);
  }

  private async writeCheckpoint(file: string): Promise<void> {
    const { position, epochSoFar } = this;
    const tensors: Array<[string, Tensor]> = [];
    for (const [name, t] of await this.own.stateDict('all')) tensors.push([`model.${name}`, t]);
    const state = await nativeCall(() => this.handle.state());
    state.momentum.names.forEach((name, i) => tensors.push([`momentum.${name}`, new Tensor(state.momentum.tensors[i])]));
    const bankState = this.bank.state();
    tensors.push(['bank.rows', await bankState.rows.to('cpu')], ['bank.generator', bankState.generator]);
    const { momentum: _momentum, ...scalars } = state;
    const meta: CheckpointMeta = {
      format: CHECKPOINT_FORMAT, config: this.config, worldSize: this.worldSize, position, state: scalars, epochSoFar,
      data: this.data, threads: binding.getNumThreads(),
    };
    // Copies of the whole run (the bank's rows: 655 MB at ImageNet scale), each checkpoint's: freed once written.
    await writeSafetensors(file, tensors, { format: 'pt', 'pirl-checkpoint': JSON.stringify(meta) }).finally(() => disposeAll(tensors.map(([, t]) => t)));
  }

  /**
   * Continues a run from its checkpoint over the same data set, exactly as it would have gone on;
   * `options.device` moves it (a CUDA run continues on the CPU, or the other way round).
   */
  static async resume(file: string, dataset: Dataset, options: ResumeOptions = {}): Promise<Trainer> {
    const group = groupOf(options, ['distributed', 'cudaGraphs', 'device', 'epochs', 'rescaleBatch']);
    const trainer = await beforeJoining(group, async () => {
      const device = options.device === undefined ? undefined : checkDevice('options.device', options.device);
      const rescaleBatch = options.rescaleBatch === undefined ? false : checkBoolean('options.rescaleBatch', options.rescaleBatch);
      checkDataset('dataset', dataset); // before a checkpoint of gigabytes is read
      const { tensors, metadata } = await readSafetensors(file);
      try {
        const meta = checkpointMeta(file, metadata, device);
        const c = onRanks(file, withLength(meta, options.epochs), meta.worldSize, group?.worldSize ?? 1, rescaleBatch);
        if (c.epochs !== meta.config.epochs && (group?.rank ?? 0) === 0) warnOfWarmupSpanningRun(c.warmupEpochs, c.epochs);
        const place = resolveProcess(options, c, group);
        const rows = tensors.get('bank.rows');
        if (!rows || rows.shape[0] !== dataset.length) {
          // pirl's checkpoints before format 4 read hidden files (._x.jpg, .thumbs/) as images, as pirl no longer does.
          const earlier = meta.data === null ? ' (an earlier pirl wrote it, which read hidden files and folders as images — ._x.jpg, .thumbs/ — ' +
            'as pirl no longer does: if the folder holds some, resume with the pirl that wrote it, or start anew)' : '';
          throw new RangeError(`${file}: the run trained on a data set of ${rows?.shape[0]} samples (its memory bank's rows); the one given has ${dataset.length}${earlier || `: resume over the run's data (the folder it trained on, as it was), ${newRunFrom(file)}`}` +
            (readHint(meta.data?.read ?? null, dataset) || cacheHint(dataset, rows?.shape[0])));
        }
        const data = dataDigest(dataset);
        checkSameData(file, meta.data, data, readHint(meta.data?.read ?? null, dataset));
        if ((group?.rank ?? 0) === 0) warnOfOtherThreads(meta.threads);
        const generator = tensors.get('bank.generator');
        if (!generator) throw new TypeError(`${file}: no tensor 'bank.generator' (the memory bank's sampling state)`);
        const loader = Trainer.loaderFor(dataset, c, place);
        checkPosition(file, meta.position, loader.batchesPerEpoch, c.epochs);
        const modelTensors = new Map<string, Tensor>();
        const momentum = new Map<string, Tensor>();
        for (const [name, t] of tensors) {
          if (name.startsWith('model.')) modelTensors.set(name.slice(6), t);
          if (name.startsWith('momentum.')) momentum.set(name.slice(9), t);
        }
        if (meta.position.step > 0 && momentum.size === 0) throw new TypeError(`${file}: ${meta.position.step} steps taken but no optimizer momentum tensors`);
        checkTensorsFitOptions(file, modelTensors, c.model);
        // What the native state refuses (a tensor of the wrong width, a generator state that is none) is the file's.
        const fromFile = (err: Error) => (err.message.startsWith(file) ? err : errorFrom(`${file}: ${err.message}`, err));
        let model: PirlModel | null = null, bank: MemoryBank | null = null, trainer: Trainer | null = null;
        try {
          model = await PirlModel.create(c.model, { device: place.device });
          await model.loadStateDict(modelTensors);
          bank = await MemoryBank.restoreNamed({ rows, generator }, { device: place.device }, ['bank.rows', 'bank.generator']);
          trainer = new Trainer(model, bank, loader, c, place, data);
          const names = [...momentum.keys()];
          await nativeCall(() => trainer!.handle.setState(meta.state, names, names.map((n) => momentum.get(n)!.handle)));
          trainer.position = meta.position;
          // Rank 0's share of the epoch so far, in this process's batches (rescaleBatch: another size than the run's steps had).
          const share = meta.worldSize / trainer.worldSize;
          trainer.epochSoFar = { lossSum: meta.epochSoFar.lossSum * share, images: Math.round(meta.epochSoFar.images * share) };
          return trainer;
        } catch (err) {
          // What was built for the run is let go now, not at a collection (a model holds its thread, a bank gigabytes).
          await trainer?.dispose();
          for (const built of [model, bank]) built?.dispose();
          throw err instanceof Error ? fromFile(err) : err;
        }
      } finally {
        disposeAll(tensors.values()); // the file's: copied into the run, or refused
      }
    });
    await trainer.joinRanks();
    return trainer;
  }
}

// `model` given `init`'s weights and buffers (a copy of each, let go once loaded).
async function startFrom(model: PirlModel, init: PirlModel): Promise<void> {
  const weights = await init.stateDict();
  try {
    await model.loadStateDict(weights);
  } finally {
    disposeAll(weights.values());
  }
}

// A folder's unreadable images are samples read without a cache and left out of the data set through one: a run
// resumed the other way finds another number of samples.
function cacheHint(dataset: Dataset, trained: number | undefined): string {
  if (!(dataset instanceof ImageFolder) || trained === undefined) return '';
  if (dataset.leftOut > 0 && trained === dataset.length + dataset.leftOut) {
    return `. The folder's cache left out its ${dataset.leftOut} unreadable image(s), which the run kept as samples (it read the folder without a cache, ` +
      'or through one with an earlier pirl): resume it without the cache (options.cache, --cache)';
  }
  if (dataset.leftOut === 0 && trained < dataset.length) {
    return '. If the run read the folder through a cache (options.cache, --cache), which leaves unreadable images out of the data set, resume it with one';
  }
  return '';
}

// What a run over other data than its checkpoint's can do instead of resuming.
const newRunFrom = (checkpoint: string) => `or start a new run from its weights (options.init: PirlModel.load(${checkpoint}); pirl train --init ${checkpoint}, in another --out)`;

// A folder read otherwise than the run read it lists other images, or labels them otherwise: where the data set differs,
// the options that read it so. (A folder without subfolders is the same data, recursive or not.)
function readHint(saved: FolderRead | null, dataset: Dataset): string {
  const now = folderRead(dataset);
  if (saved === null || now === null) return '';
  const differs = [
    ...(saved.layout !== now.layout ? [`layout '${saved.layout}' (the data set given: '${now.layout}')`] : []),
    ...(saved.recursive !== now.recursive ? [`recursive ${saved.recursive} (the data set given: ${now.recursive})`] : []),
  ];
  if (differs.length === 0) return '';
  return `. The run read its folder with ${differs.join(' and ')}: open it as the run did (ImageFolder.open's options.layout and options.recursive; pirl train --layout, --recursive)`;
}

// A resumed run's bank rows, momentum and position belong to the samples it trained on: another folder of as many
// images (one removed, one added) would silently pair each row with another image.
function checkSameData(file: string, saved: DataDigest | null, data: DataDigest, hint: string): void {
  if (saved === null) return;
  // One a folder's digest of names, the other none: the kinds differ (a value edited into the file is only another digest).
  const [wasFolder, isFolder] = [saved, data].map((d) => folderOf(d.files));
  if (wasFolder !== null && isFolder !== null && wasFolder !== isFolder) {
    const [was, is] = [wasFolder, isFolder].map((f) => (f ? 'a folder of images' : 'not a folder (its samples have no file names)'));
    throw new Error(`${file}: the data set given is not the one the run trained on: the run's was ${was}, the one given is ${is} ` +
      `(each bank row would belong to another image): resume over the run's data, ${newRunFrom(file)}`);
  }
  const differs = saved.files !== data.files ? 'its files (names, in the folder)' : saved.labels !== data.labels ? 'its labels' : null;
  if (differs) {
    throw new Error(`${file}: the data set given is not the one the run trained on: ${differs} differ, though it has as many samples ` +
      `(each bank row would belong to another image): resume over the run's data, ${newRunFrom(file)}${hint}`);
  }
  // 'unknown': a Dataset of one's own (or of another copy of pirl), whose samples pirl cannot describe.
  if (saved.images !== null && saved.images !== 'unknown' && data.images !== 'unknown' && saved.images !== data.images) {
    throw new Error(`${file}: the run trained on its images stored at ${saved.images}; the data set given holds them at ${data.images}: ` +
      `open it as the run did (ImageFolder.open's size; pirl train --size) — its views would be cut from other pixels`);
  }
}

// Steps continue as they would have, but not bit for bit: a float sum split over another number of threads rounds
// otherwise (a few units in the last place per step, which the steps then carry).
function warnOfOtherThreads(saved: number | null): void {
  const now = binding.getNumThreads();
  if (saved === null || saved === now) return;
  process.emitWarning(`the run stepped with ${saved} intra-op thread(s); this process has ${now}: it continues, but its numbers ` +
    `part from the uninterrupted run's in the last bits (setNumThreads(${saved}), pirl train --threads ${saved}: as it was)`, { code: 'PIRL_THREADS_CHANGED' });
}

// The run's config on `now` ranks: as it was on as many as it trained on; on another number, with options.rescaleBatch,
// each rank's batch rescaled to the run's global batch.
function onRanks(file: string, c: ResolvedTrainConfig, trained: number, now: number, rescale: boolean): ResolvedTrainConfig {
  if (trained === now) return c;
  if (!rescale) {
    throw rangeError(`${metadataField(file, 'pirl-checkpoint')}.worldSize`, `${now} (the ranks resuming it): a run resumes exactly on as many ranks as it trained on ` +
      '(options.rescaleBatch resumes it on another number, keeping its global batch)', trained);
  }
  const global = c.batchSize * trained;
  const ranks = (expected: string) => rangeError('options.distributed.worldSize', `${expected} with options.rescaleBatch (the run's global batch: ${trained} ranks × ${c.batchSize})`, now);
  if (global % now !== 0) throw ranks(`a divisor of the run's global batch of ${global}`);
  try {
    TRAIN.batchSize.resolve('batchSize', global / now, c.batchSize, true);
  } catch (err) {
    throw isArgumentError(err) ? ranks(`enough ranks for each one's share of ${global} to be a batchSize (${err.expected})`) : err;
  }
  return { ...c, batchSize: global / now };
}

/** The checkpoint's config, its epochs replaced by `epochs` (ResumeOptions.epochs) when given. */
function withLength(meta: CheckpointMeta, epochs: number | undefined): ResolvedTrainConfig {
  if (epochs === undefined) return meta.config;
  TRAIN.epochs.resolve('options.epochs', epochs, meta.config.epochs, true); // a config's epochs
  const { epoch, stepInEpoch } = meta.position;
  const begun = epoch + (stepInEpoch > 0 ? 1 : 0);
  if (epochs < begun) {
    const where = stepInEpoch > 0 ? `it is inside its epoch ${epoch} counting from 0, progress.epoch` : `it has done ${epoch}`;
    throw rangeError('options.epochs', `at least ${begun}, the epochs the run has begun (${where})`, epochs);
  }
  return { ...meta.config, epochs };
}

/** A position the run can be at: inside its epochs, and the step count its epoch and step in the epoch imply. */
function checkPosition(file: string, p: Position, stepsPerEpoch: number, epochs: number): void {
  const field = `${metadataField(file, 'pirl-checkpoint')}.position`;
  if (p.epoch > epochs) throw rangeError(`${field}.epoch`, `at most the run's ${epochs} epochs`, p.epoch);
  // An epoch's last step may be saved before the epoch's end (checkpointEvery): the resumed fit ends that epoch.
  if (p.epoch === epochs && p.stepInEpoch > 0) throw rangeError(`${field}.stepInEpoch`, `0 once the run's ${epochs} epochs are done`, p.stepInEpoch);
  if (p.stepInEpoch > stepsPerEpoch) throw rangeError(`${field}.stepInEpoch`, `at most the ${stepsPerEpoch} steps of an epoch of this data set`, p.stepInEpoch);
  if (p.step !== p.epoch * stepsPerEpoch + p.stepInEpoch) {
    throw rangeError(`${field}.step`, `epoch·${stepsPerEpoch} + stepInEpoch = ${p.epoch * stepsPerEpoch + p.stepInEpoch}`, p.step);
  }
}
