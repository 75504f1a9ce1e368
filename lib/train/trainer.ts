// The PIRL training loop: SGD with warm-up and cosine decay over native steps, callbacks, atomic
// checkpoints and exact resume (shared/PIRL.md, "Optimisation").
import { binding, type TrainerHandle } from '../binding';
import type { Dataset } from '../data/datasets';
import { Loader, type PirlBatch } from '../data/loader';
import { resolveSamplerConfig, type SamplerConfig, type SamplerPreset } from '../data/sampler';
import { checkInteger, checkOneOf, nativeCall, rangeError, typeError } from '../errors';
import { featureBatches } from '../eval/knn';
import { resolvePirlLossOptions, type PirlLossOptions } from '../loss';
import { MemoryBank } from '../memoryBank';
import { PirlModel, type PirlModelOptions } from '../model';
import { readSafetensors, writeSafetensors } from '../safetensors';
import { Tensor } from '../tensor';
import { lrAt, type LrSchedule } from './schedule';

export interface TrainConfig {
  model?: PirlModelOptions;
  loss?: PirlLossOptions;
  sampler?: SamplerPreset | (Partial<SamplerConfig> & { preset?: SamplerPreset });
  epochs?: number;
  batchSize?: number;
  /** lr = baseLr·batchSize/256 (0.03 in the paper). */
  baseLr?: number;
  warmupEpochs?: number;
  finalLrRatio?: number;
  momentum?: number;
  weightDecay?: number;
  /** Batches per epoch at most (default: the whole data set). */
  epochLength?: number;
  seed?: number;
  /**
   * The memory bank's first rows: 'random' (the paper, default) or 'features' — each sample's f
   * embedding from the initial model (eval transform), so the first epoch's positives carry the
   * images' similarities instead of noise; one forward pass over the data, worth it for short runs.
   */
  bankInit?: 'random' | 'features';
}

export interface BatchLogs {
  epoch: number;
  step: number;
  loss: number;
  lossImage: number;
  lossJigsaw: number;
  lr: number;
  gradNorm: number;
  imagesPerSecond: number;
}

export interface EpochLogs {
  epoch: number;
  loss: number;
  imagesPerSecond: number;
}

export interface Callbacks {
  onTrainBegin?(info: { epochs: number; stepsPerEpoch: number }): void | Promise<void>;
  onEpochBegin?(epoch: number): void | Promise<void>;
  onBatchEnd?(logs: BatchLogs): void | Promise<void>;
  onEpochEnd?(logs: EpochLogs): void | Promise<void>;
  onTrainEnd?(logs: { epochs: number; steps: number }): void | Promise<void>;
}

export interface FitOptions {
  callbacks?: Callbacks;
  /** Write a checkpoint here every `checkpointEvery` steps and at the end of each epoch. */
  checkpoint?: string;
  checkpointEvery?: number;
}

type ResolvedConfig = Required<Omit<TrainConfig, 'model' | 'loss' | 'sampler' | 'epochLength'>> & {
  model: PirlModelOptions;
  loss: Required<PirlLossOptions>;
  sampler: SamplerConfig;
  epochLength: number | null;
};

function resolveConfig(config: TrainConfig): ResolvedConfig {
  if (typeof config !== 'object' || config === null) throw typeError('config', 'an object', config);
  const number = (name: keyof TrainConfig, value: unknown, min: number): number => {
    if (typeof value !== 'number' || !Number.isFinite(value) || value < min) throw rangeError(`config.${name}`, `a number >= ${min}`, value);
    return value;
  };
  return {
    model: { ...(config.model ?? {}) },
    loss: resolvePirlLossOptions(config.loss ?? {}),
    sampler: resolveSamplerConfig(config.sampler ?? 'small'),
    epochs: checkInteger('config.epochs', config.epochs ?? 1, 1),
    batchSize: checkInteger('config.batchSize', config.batchSize ?? 256, 1),
    baseLr: number('baseLr', config.baseLr ?? 0.03, 0),
    warmupEpochs: number('warmupEpochs', config.warmupEpochs ?? 0, 0),
    finalLrRatio: number('finalLrRatio', config.finalLrRatio ?? 1e-3, 0),
    momentum: number('momentum', config.momentum ?? 0.9, 0),
    weightDecay: number('weightDecay', config.weightDecay ?? 1e-4, 0),
    epochLength: config.epochLength === undefined ? null : checkInteger('config.epochLength', config.epochLength, 1),
    seed: checkInteger('config.seed', config.seed ?? 0, 0),
    bankInit: checkOneOf('config.bankInit', config.bankInit ?? 'random', ['random', 'features'] as const),
  };
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

export class Trainer {
  readonly config: ResolvedConfig;
  private position: Position = { epoch: 0, stepInEpoch: 0, step: 0 };
  private readonly handle: TrainerHandle;

  private constructor(readonly model: PirlModel, readonly bank: MemoryBank, readonly loader: Loader, config: ResolvedConfig) {
    this.config = config;
    this.handle = new binding.TrainerHandle(model.handle, bank.handle, config.loss, { momentum: config.momentum, weightDecay: config.weightDecay });
  }

  /** A new run over `dataset`: a model and a bank of one row per sample, seeded by config.seed. */
  static async create(dataset: Dataset, config: TrainConfig = {}): Promise<Trainer> {
    const c = resolveConfig(config);
    const model = await PirlModel.create({ seed: c.seed, ...c.model });
    const bank = await MemoryBank.create({ size: dataset.length, dim: model.options.embeddingDim, seed: c.seed });
    if (c.bankInit === 'features') await fillBankWithFeatures(model, bank, dataset, c.sampler.imageSize, Math.max(c.batchSize, 256));
    return new Trainer(model, bank, Trainer.loaderFor(dataset, c), c);
  }

  private static loaderFor(dataset: Dataset, c: ResolvedConfig): Loader {
    return new Loader(dataset, {
      batchSize: c.batchSize, seed: c.seed, config: c.sampler, dropLast: true,
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

  /** One step on one batch (exposed for custom loops); returns the native step's losses. */
  async step(batch: PirlBatch, lr: number): Promise<{ loss: number; lossImage: number; lossJigsaw: number; gradNorm: number }> {
    return nativeCall(() => this.handle.step(batch.images.handle, batch.patches.handle, batch.indices.handle, lr));
  }

  /** Trains from where the run stands to config.epochs; the event loop stays free throughout. */
  async fit(options: FitOptions = {}): Promise<void> {
    const cb = options.callbacks ?? {};
    const every = options.checkpointEvery === undefined ? null : checkInteger('options.checkpointEvery', options.checkpointEvery, 1);
    const schedule = this.schedule;
    await cb.onTrainBegin?.({ epochs: this.config.epochs, stepsPerEpoch: this.stepsPerEpoch });
    while (this.position.epoch < this.config.epochs) {
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
        await cb.onBatchEnd?.({ epoch, step: this.position.step, ...r, lr, imagesPerSecond: (size * 1000) / (now - last) });
        last = now;
      }
      this.position = { epoch: epoch + 1, stepInEpoch: 0, step: this.position.step };
      if (options.checkpoint) await this.save(options.checkpoint);
      await cb.onEpochEnd?.({ epoch, loss: images ? lossSum / images : NaN, imagesPerSecond: (images * 1000) / (performance.now() - epochStart) });
    }
    await cb.onTrainEnd?.({ epochs: this.config.epochs, steps: this.position.step });
  }

  /**
   * Everything the run changes — model, optimizer momentum, memory bank and its generator, Z, the
   * position and the config — as one safetensors file, written atomically.
   */
  async save(file: string): Promise<void> {
    const tensors: Array<[string, Tensor]> = [];
    for (const [name, t] of this.model.stateDict('all')) tensors.push([`model.${name}`, t]);
    const state = this.handle.state();
    state.momentum.names.forEach((name, i) => tensors.push([`momentum.${name}`, new Tensor(state.momentum.tensors[i])]));
    const bankState = this.bank.state();
    tensors.push(['bank.rows', bankState.rows], ['bank.generator', bankState.generator]);
    const meta = { config: this.config, modelOptions: this.model.options, position: this.position, z: { image: state.zImage, jigsaw: state.zJigsaw } };
    await writeSafetensors(file, tensors, { format: 'pt', 'pirl-checkpoint': JSON.stringify(meta) });
  }

  /** Continues a run from its checkpoint over the same data set. */
  static async resume(file: string, dataset: Dataset): Promise<Trainer> {
    const { tensors, metadata } = await readSafetensors(file);
    if (!metadata['pirl-checkpoint']) throw new TypeError(`${file}: not a pirl training checkpoint`);
    const meta = JSON.parse(metadata['pirl-checkpoint']) as { config: ResolvedConfig; modelOptions: PirlModelOptions; position: Position; z: { image: number; jigsaw: number } };
    const c = meta.config;
    const rows = tensors.get('bank.rows');
    if (!rows || rows.shape[0] !== dataset.length) {
      throw new RangeError(`${file}: its memory bank has ${rows?.shape[0]} rows, the data set ${dataset.length} samples`);
    }
    const model = await PirlModel.create(meta.modelOptions);
    const modelTensors = new Map<string, Tensor>();
    const momentum = new Map<string, Tensor>();
    for (const [name, t] of tensors) {
      if (name.startsWith('model.')) modelTensors.set(name.slice(6), t);
      if (name.startsWith('momentum.')) momentum.set(name.slice(9), t);
    }
    model.loadStateDict(modelTensors);
    const bank = MemoryBank.restore({ rows, generator: tensors.get('bank.generator')! });
    const trainer = new Trainer(model, bank, Trainer.loaderFor(dataset, c), c);
    const names = [...momentum.keys()];
    trainer.handle.setState(meta.z.image, meta.z.jigsaw, names, names.map((n) => momentum.get(n)!.handle));
    trainer.position = meta.position;
    return trainer;
  }
}
