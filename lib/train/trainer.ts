// The PIRL training loop: SGD with warm-up and cosine decay over native steps, callbacks, atomic
// checkpoints and exact resume (docs/PIRL.md, "Optimisation").
import { binding, type NativeStepResult, type NativeTrainScalars, type TrainerHandle } from '../binding';
import { checkDevice, resolveTrainConfig, type Device, type ResolvedTrainConfig, type TrainConfig } from '../config';
import type { Dataset } from '../data/datasets';
import { Loader, type PirlBatch } from '../data/loader';
import { checkInteger, checkNumber, checkObject, nativeCall, rangeError, unknownOptionError } from '../errors';
import { featureBatches } from '../eval/knn';
import { MemoryBank } from '../memoryBank';
import { PirlModel, checkTensorsFitOptions } from '../model';
import { jsonMetadata, metadataField, readSafetensors, removeStaleTemporaries, writeSafetensors } from '../safetensors';
import { Tensor } from '../tensor';
import { lrAt, type LrSchedule } from './schedule';

export interface BatchLogs {
  epoch: number;
  step: number;
  loss: number;
  lossImage: number;
  lossJigsaw: number;
  lr: number;
  gradNorm: number;
  /** false when fp16 gradients overflowed: the step was skipped and the loss scale halved. */
  applied: boolean;
  imagesPerSecond: number;
}

export interface EpochLogs {
  epoch: number;
  loss: number;
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

export interface FitOptions {
  callbacks?: Callbacks;
  /** Write a checkpoint here every `checkpointEvery` steps and at the end of each epoch. */
  checkpoint?: string;
  checkpointEvery?: number;
}

/** m_y ← f̂_y of the current model for every sample (eval transform); rows of undecodable images stay as they were. */
async function fillBankWithFeatures(model: PirlModel, bank: MemoryBank, dataset: Dataset, size: number, batchSize: number): Promise<void> {
  for await (const { features, indices } of featureBatches(model, dataset, { size, batchSize, layer: 'f' })) bank.update(indices, features, 0);
}

/** Where a run stands: the next step to take. */
interface Position {
  epoch: number;
  stepInEpoch: number;
  step: number;
}

/** Format of a checkpoint's `pirl-checkpoint` metadata. */
const CHECKPOINT_FORMAT = 1;

interface CheckpointMeta {
  format: number;
  config: ResolvedTrainConfig;
  position: Position;
  /** Z of both NCE terms and the fp16 loss scale. */
  state: NativeTrainScalars;
}

/** What resume() may change about a run: where it continues (e.g. a CUDA run resumed on the CPU). */
export interface ResumeOptions {
  device?: Device;
}

export class Trainer {
  readonly config: Readonly<ResolvedTrainConfig>;
  private position: Position = { epoch: 0, stepInEpoch: 0, step: 0 };
  private stopRequested = false;
  private readonly handle: TrainerHandle;

  private constructor(readonly model: PirlModel, readonly bank: MemoryBank, readonly loader: Loader, config: ResolvedTrainConfig) {
    this.config = Object.freeze(config);
    this.handle = new binding.TrainerHandle(model.handle, bank.handle, config.loss, {
      momentum: config.momentum, weightDecay: config.weightDecay, precision: config.precision,
    });
  }

  /** A new run over `dataset`: a model and a bank of one row per sample on config.device, seeded by config.seed. */
  static async create(dataset: Dataset, config: TrainConfig = {}): Promise<Trainer> {
    const c = resolveTrainConfig(config);
    const loader = Trainer.loaderFor(dataset, c);
    const model = await PirlModel.create(c.model, { device: c.device });
    const bank = await MemoryBank.create({ size: dataset.length, dim: c.model.embeddingDim, seed: c.seed, device: c.device });
    if (c.bankInit === 'features') await fillBankWithFeatures(model, bank, dataset, c.sampler.imageSize, Math.max(c.batchSize, 256));
    return new Trainer(model, bank, loader, c);
  }

  private static loaderFor(dataset: Dataset, c: ResolvedTrainConfig): Loader {
    return new Loader(dataset, {
      batchSize: c.batchSize, seed: c.seed, config: c.sampler, dropLast: true, pinMemory: c.device !== 'cpu',
      ...(c.epochLength === null ? {} : { epochLength: c.epochLength }),
    });
  }

  get stepsPerEpoch(): number {
    return this.loader.batchesPerEpoch;
  }

  get schedule(): LrSchedule {
    return {
      baseLr: this.config.baseLr, batchSize: this.config.batchSize, totalSteps: this.config.epochs * this.stepsPerEpoch,
      warmupSteps: Math.round(this.config.warmupEpochs * this.stepsPerEpoch), finalRatio: this.config.finalLrRatio,
    };
  }

  /** The step the run continues from. */
  get progress(): Readonly<Position> {
    return { ...this.position };
  }

  /** One step on one batch (exposed for custom loops): the batch moves to the model's device; returns the native step's losses. */
  async step(batch: PirlBatch, lr: number): Promise<NativeStepResult> {
    return nativeCall(() => this.handle.step(batch.images.handle, batch.patches.handle, batch.indices.handle, lr));
  }
  /** Asks fit() to stop after the step in progress; it writes its checkpoint first, so the run resumes from there. */
  stop(): void {
    this.stopRequested = true;
  }

  /** Trains from where the run stands to config.epochs (or a stop); the event loop stays free throughout. */
  async fit(options: FitOptions = {}): Promise<void> {
    const cb = options.callbacks ?? {};
    const every = options.checkpointEvery === undefined ? null : checkInteger('options.checkpointEvery', options.checkpointEvery, 1);
    const schedule = this.schedule;
    this.stopRequested = false;
    if (options.checkpoint) await removeStaleTemporaries(options.checkpoint);
    await cb.onTrainBegin?.({ epochs: this.config.epochs, stepsPerEpoch: this.stepsPerEpoch });
    while (this.position.epoch < this.config.epochs && !this.stopRequested) {
      const epoch = this.position.epoch;
      await cb.onEpochBegin?.(epoch);
      let lossSum = 0, images = 0;
      const epochStart = performance.now();
      let last = epochStart;
      for await (const batch of this.loader.epochFrom(epoch, this.position.stepInEpoch)) {
        const lr = lrAt(schedule, this.position.step);
        const r = await this.step(batch, lr);
        const now = performance.now();
        const size = batch.indices.shape[0];
        lossSum += r.loss * size;
        images += size;
        this.position = { epoch, stepInEpoch: this.position.stepInEpoch + 1, step: this.position.step + 1 };
        if (options.checkpoint && every !== null && this.position.step % every === 0) await this.save(options.checkpoint);
        if ((await cb.onBatchEnd?.({ epoch, step: this.position.step, ...r, lr, imagesPerSecond: (size * 1000) / (now - last) })) === false) this.stop();
        last = now;
        if (this.stopRequested) break;
      }
      if (this.stopRequested && this.position.stepInEpoch < this.stepsPerEpoch) {
        if (options.checkpoint) await this.save(options.checkpoint); // stopped inside the epoch
        break;
      }
      this.position = { epoch: epoch + 1, stepInEpoch: 0, step: this.position.step };
      if (options.checkpoint) await this.save(options.checkpoint);
      const logs = { epoch, loss: images ? lossSum / images : NaN, imagesPerSecond: (images * 1000) / (performance.now() - epochStart) };
      if ((await cb.onEpochEnd?.(logs)) === false) this.stop();
    }
    await cb.onTrainEnd?.({ epochs: this.config.epochs, steps: this.position.step, stopped: this.position.epoch < this.config.epochs });
  }

  /**
   * Everything the run changes — model, optimizer momentum, memory bank and its generator, Z, the
   * position and the config (the device included) — as one safetensors file, written atomically.
   */
  async save(file: string): Promise<void> {
    const tensors: Array<[string, Tensor]> = [];
    for (const [name, t] of this.model.stateDict('all')) tensors.push([`model.${name}`, t]);
    const state = this.handle.state();
    state.momentum.names.forEach((name, i) => tensors.push([`momentum.${name}`, new Tensor(state.momentum.tensors[i])]));
    const bankState = this.bank.state();
    tensors.push(['bank.rows', await bankState.rows.to('cpu')], ['bank.generator', bankState.generator]);
    const { momentum: _momentum, ...scalars } = state;
    const meta: CheckpointMeta = { format: CHECKPOINT_FORMAT, config: this.config, position: this.position, state: scalars };
    await writeSafetensors(file, tensors, { format: 'pt', 'pirl-checkpoint': JSON.stringify(meta) });
  }

  /**
   * Continues a run from its checkpoint over the same data set, exactly as it would have gone on;
   * `options.device` moves it (a CUDA run continues on the CPU, or the other way round).
   */
  static async resume(file: string, dataset: Dataset, options: ResumeOptions = {}): Promise<Trainer> {
    const device = options.device === undefined ? undefined : checkDevice('options.device', options.device);
    const { tensors, metadata } = await readSafetensors(file);
    const meta = checkpointMeta(file, metadata, device);
    const c = meta.config;
    const rows = tensors.get('bank.rows');
    if (!rows || rows.shape[0] !== dataset.length) {
      throw new RangeError(`${file}: its memory bank has ${rows?.shape[0]} rows, the data set ${dataset.length} samples`);
    }
    const generator = tensors.get('bank.generator');
    if (!generator) throw new TypeError(`${file}: no tensor 'bank.generator' (the memory bank's sampling state)`);
    const loader = Trainer.loaderFor(dataset, c);
    checkPosition(file, meta.position, loader.batchesPerEpoch, c.epochs);
    const modelTensors = new Map<string, Tensor>();
    const momentum = new Map<string, Tensor>();
    for (const [name, t] of tensors) {
      if (name.startsWith('model.')) modelTensors.set(name.slice(6), t);
      if (name.startsWith('momentum.')) momentum.set(name.slice(9), t);
    }
    if (meta.position.step > 0 && momentum.size === 0) throw new TypeError(`${file}: ${meta.position.step} steps taken but no optimizer momentum tensors`);
    checkTensorsFitOptions(file, modelTensors, c.model);
    const model = await PirlModel.create(c.model, { device: c.device });
    model.loadStateDict(modelTensors);
    const bank = MemoryBank.restore({ rows, generator }, { device: c.device });
    const trainer = new Trainer(model, bank, loader, c);
    const names = [...momentum.keys()];
    trainer.handle.setState(meta.state, names, names.map((n) => momentum.get(n)!.handle));
    trainer.position = meta.position;
    return trainer;
  }
}

/** A checkpoint's training config from its metadata (readSafetensorsMetadata), checked; `device` replaces the saved one. */
export function checkpointConfigOf(file: string, metadata: Record<string, string>, device?: Device): ResolvedTrainConfig {
  return checkpointMeta(file, metadata, device).config;
}

/** The checkpoint's metadata, checked like user input (errors name the file and the field); `device` replaces the saved one. */
function checkpointMeta(file: string, metadata: Record<string, string>, device: Device | undefined): CheckpointMeta {
  const meta = jsonMetadata(file, metadata, 'pirl-checkpoint');
  if (meta === undefined) throw new TypeError(`${file}: not a pirl training checkpoint (no "pirl-checkpoint" metadata)`);
  const field = metadataField(file, 'pirl-checkpoint');
  const keys = ['format', 'config', 'position', 'state'];
  for (const key of Object.keys(meta)) {
    if (!keys.includes(key)) throw unknownOptionError(field, key, keys);
  }
  if (meta.format !== CHECKPOINT_FORMAT) {
    throw rangeError(`${field}.format`, `${CHECKPOINT_FORMAT} (written by this pirl; an older checkpoint resumes with the pirl that wrote it)`, meta.format);
  }
  const saved = checkObject(`${field}.config`, meta.config);
  const config = resolveTrainConfig(device === undefined ? saved : { ...saved, device }, `${field}.config`, true);
  const p = checkObject(`${field}.position`, meta.position);
  const position = {
    epoch: checkInteger(`${field}.position.epoch`, p.epoch, 0),
    stepInEpoch: checkInteger(`${field}.position.stepInEpoch`, p.stepInEpoch, 0),
    step: checkInteger(`${field}.position.step`, p.step, 0),
  };
  const s = checkObject(`${field}.state`, meta.state);
  const state = {
    zImage: checkNumber(`${field}.state.zImage`, s.zImage),
    zJigsaw: checkNumber(`${field}.state.zJigsaw`, s.zJigsaw),
    lossScale: checkNumber(`${field}.state.lossScale`, s.lossScale, { min: 0, minExclusive: true }),
    goodSteps: checkInteger(`${field}.state.goodSteps`, s.goodSteps, 0),
  };
  return { format: CHECKPOINT_FORMAT, config, position, state };
}

/** A position the run can be at: inside its epochs, and the step count its epoch and step in the epoch imply. */
function checkPosition(file: string, p: Position, stepsPerEpoch: number, epochs: number): void {
  const field = `${metadataField(file, 'pirl-checkpoint')}.position`;
  if (p.epoch > epochs) throw rangeError(`${field}.epoch`, `at most the run's ${epochs} epochs`, p.epoch);
  if (p.stepInEpoch >= stepsPerEpoch) throw rangeError(`${field}.stepInEpoch`, `below the ${stepsPerEpoch} steps of an epoch of this data set`, p.stepInEpoch);
  if (p.step !== p.epoch * stepsPerEpoch + p.stepInEpoch) {
    throw rangeError(`${field}.step`, `epoch·${stepsPerEpoch} + stepInEpoch = ${p.epoch * stepsPerEpoch + p.stepInEpoch}`, p.step);
  }
}
