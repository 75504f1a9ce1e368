// Every option of pirl, its allowed values and its default, per concept (docs/PIRL.md): the model,
// the loss, the sampler, the optimizer and its schedule, the evaluation protocols and the run (device,
// threads, seed). This is the only place that holds them: each resolveX() returns a complete, checked
// plain object, the public option types and the resolved types are derived from the same schemas,
// and native code (lib/binding.ts) receives exactly the resolved types.
import { binding } from './binding';
import { JIGSAW_CELLS, checkJigsawGeometry } from './data/jigsaw';
import { LR_UPDATES } from './train/schedule';
import { checkNumber, checkObject, checkOneOf, isArgumentError, rangeError, typeError } from './errors';
import { boolean, integer, leaf, nested, nullable, number, oneOf, resolve, whole, type DeepReadonly, type Field, type Options, type Resolved } from './schema';

export type Device = 'cpu' | 'cuda' | `cuda:${number}`;

const unit = { min: 0, max: 1 };
const belowOne = { min: 0, max: 1, maxExclusive: true };
const positive = { min: 0, minExclusive: true };

// ---------------------------------------------------------------------------------------------------
// Run: where and how a process computes.

/** 'cpu', 'cuda' or 'cuda:N', and only a device this libtorch can use; errors say how to get CUDA. */
export function checkDevice(arg: string, value: unknown): Device {
  if (typeof value !== 'string' || !/^(cpu|cuda(:\d+)?)$/.test(value)) throw typeError(arg, "'cpu', 'cuda' or 'cuda:N'", value);
  if (value === 'cpu') return value;
  const info = binding.buildInfo();
  if (!info.cudaCompiled) {
    const howTo = 'To train on a GPU, give pirl a CUDA libtorch and rebuild the addon for it: set LIBTORCH=/path/to/libtorch ' +
      '(a CUDA build from pytorch.org) or `pip install torch` (a CUDA wheel), then run ' +
      '`PIRL_FORCE_BUILD=1 node node_modules/pirl/scripts/install.js`; `npx pirl info` shows what is found.';
    const without = `the libtorch pirl runs on (${info.libtorchVersion}, ${info.libtorchLibrary}) has no CUDA`;
    // An argument error (so the CLI names --device) that keeps its own wording.
    const expected = `'cpu' (${without}; for a GPU, give pirl a CUDA libtorch — LIBTORCH=… or pip install torch — then run PIRL_FORCE_BUILD=1 node node_modules/pirl/scripts/install.js)`;
    throw Object.assign(new TypeError(`${arg} is '${value}', but ${without}. ${howTo}`), { argument: arg, expected, received: value });
  }
  const index = value === 'cuda' ? 0 : Number(value.slice(5));
  if (index >= info.cudaDeviceCount) {
    throw rangeError(arg, `a CUDA device of the ${info.cudaDeviceCount} visible (check the driver and CUDA_VISIBLE_DEVICES)`, value);
  }
  return value as Device;
}

const device = (): Field<Device> => leaf("'cpu', 'cuda' or 'cuda:N'", checkDevice);
// A count from 1 to the addon's limit `name`, read when checked (the addon loads at its first use).
const countUpTo = (name: string, max: () => number): Field<number> => leaf(`an integer in [1, ${name}]`, (arg, v) => checkNumber(arg, v, { integer: true, min: 1, max: max() }));
// 32 bits: the data order, the bank and the weights took a seed's low 32 bits, so 2^32 repeated seed 0.
const seed = () => integer({ min: 0, max: 2 ** 32 - 1 });

const RUN = {
  /** Where the model, the memory bank and every batch live. */
  device: device(),
  /** Intra-op threads for every native computation (null: $PIRL_NUM_THREADS or the cores available). */
  threads: nullable(countUpTo('maxThreads', () => binding.buildInfo().maxThreads)),
  /** Seeds the weights, the memory bank, the negatives and every augmentation. */
  seed: seed(),
};
export type RunOptions = Options<typeof RUN>;
export type ResolvedRunOptions = Resolved<typeof RUN>;
export const RUN_DEFAULTS: Readonly<ResolvedRunOptions> = Object.freeze({ device: 'cpu', threads: null, seed: 0 });

export function resolveRunOptions(options: RunOptions = {}, arg = 'options'): ResolvedRunOptions {
  return resolve(RUN, RUN_DEFAULTS, options, arg);
}

/** Where a model or a memory bank is placed; not part of its options (a saved model loads on any device). */
export interface Placement {
  device?: Device;
}

/** The device `placement` asks for (default: the run's); errors name `placement.…`. */
export function placementDevice(placement: Placement = {}): Device {
  return resolve({ device: RUN.device }, { device: RUN_DEFAULTS.device }, placement, 'placement').device;
}

// ---------------------------------------------------------------------------------------------------
// Model: the trunk and the f and g heads (docs/PIRL.md, "Network").

export const ARCHS = ['resnet18', 'resnet34', 'resnet50'] as const;
export type Arch = (typeof ARCHS)[number];
export type Stem = 'imagenet' | 'small';

const MODEL = {
  /** ResNet depth (the paper: resnet50). */
  arch: oneOf(ARCHS),
  /** 'imagenet': 7×7 stride-2 conv and max-pool; 'small': 3×3 stride-1 conv, no pool (28–96 px images). */
  stem: oneOf<Stem>(['imagenet', 'small']),
  /**
   * Multiplies every stage's width; only 1 is torchvision-compatible. At least 1/64 (the stem's 64 channels down to
   * one): below it every layer rounded up to one channel, and 1e-9 was taken as such.
   */
  width: number({ min: 1 / 64, max: 4 }),
  /** D of f and g (128). */
  embeddingDim: integer({ min: 1, max: 4096 }),
  /** NHWC activations and weights (measured 1.04× faster for a CPU training step, bench:model). */
  channelsLast: boolean(),
  /**
   * Whether the jigsaw-patch pass also updates the BatchNorm running statistics, as in VISSL (false:
   * eval mode sees whole images, so only the image pass sets them; +1.3 kNN points measured on
   * Fashion-MNIST, README "The demo").
   */
  patchRunningStats: boolean(),
  /** Seeds the initial weights: the same options give the same model. */
  seed: seed(),
};
export type PirlModelOptions = Options<typeof MODEL>;
export type ResolvedModelOptions = Resolved<typeof MODEL>;

// ---------------------------------------------------------------------------------------------------
// Loss: NCE against the memory bank and the PIRL objective (docs/PIRL.md, "Loss").

export type NceMode = 'nce' | 'infonce';
const nceMode = () => oneOf<NceMode>(['nce', 'infonce']);

const LOSS = {
  /** λ: weight of the jigsaw term. */
  lambda: number(unit),
  /** Temperature τ. */
  tau: number(positive),
  /** K negatives per sample and term (paper 32,000; ablations 4,096). */
  negatives: integer({ min: 1, max: 1_000_000 }),
  /** μ of the bank update. */
  momentum: number(belowOne),
  /** 'nce': the paper's/VISSL's NCE; 'infonce': softmax cross-entropy, the positive first. */
  mode: nceMode(),
  /** NCE's Z: 'frozen' — estimated on the first step then fixed (NPID, VISSL); 'ema' — follows each batch. */
  z: oneOf<'frozen' | 'ema'>(['frozen', 'ema']),
  zMomentum: number(belowOne),
  /** One set of K negatives for the whole batch (a matrix product: much faster). */
  sharedNegatives: boolean(),
  /** Never draw a sample's own row as its negative. */
  excludePositive: boolean(),
};
export type PirlLossOptions = Options<typeof LOSS>;
export type ResolvedLossOptions = Resolved<typeof LOSS>;

/** The fused NCE op's own options (nceLoss). */
const NCE = {
  tau: LOSS.tau,
  mode: nceMode(),
  /** Z; <= 0 (the default) estimates it from this batch as N·mean(e^{s/τ}). */
  z: number(),
};
export type NceLossOptions = Options<typeof NCE>;
export type ResolvedNceOptions = Resolved<typeof NCE>;

export function resolveNceOptions(options: NceLossOptions = {}, arg = 'options'): ResolvedNceOptions {
  // The op's own mode ('nce', as its name); τ as PIRL's loss.
  return checkNceTau(resolve(NCE, { tau: DEFAULT_RECIPE.loss.tau, mode: 'nce', z: -1 }, options, arg), arg);
}

// NCE's Z = N·mean(e^{s/τ}) of unit embeddings reaches N·e^{1/τ}: beyond float64 (1e308) below τ ≈ 1/700.
const MIN_NCE_TAU = 0.0015;

function checkNceTau<T extends { mode: NceMode; tau: number }>(options: T, arg: string): T {
  if (options.mode === 'nce' && options.tau < MIN_NCE_TAU) {
    throw rangeError(`${arg}.tau`, `at least ${MIN_NCE_TAU} with ${arg}.mode 'nce' (its Z = N·mean(e^{s/τ}) overflows float64 below; 'infonce' takes any τ > 0)`, options.tau);
  }
  return options;
}

// ---------------------------------------------------------------------------------------------------
// Sampler: the sizes and augmentation strengths of PIRL's two views (docs/PIRL.md, "Data").

export type SamplerPreset = 'paper' | 'small';
export type PhotometricOps = 'one' | 'all';

const size = (max: number) => integer({ min: 1, max });
const SAMPLER = {
  /** S: side of the image view. */
  imageSize: size(1024),
  /** J: side of the jigsaw crop, a multiple of 3 (cells of J/3). */
  jigsawSize: integer({ min: JIGSAW_CELLS, max: 1536 }),
  /** P: side of each of the 9 patches, at most J/3. */
  patchSize: size(512),
  imageScaleMin: number({ ...positive, max: 1 }),
  imageScaleMax: number({ ...positive, max: 1 }),
  jigsawScaleMin: number({ ...positive, max: 1 }),
  jigsawScaleMax: number({ ...positive, max: 1 }),
  brightness: number(unit),
  contrast: number(unit),
  saturation: number(unit),
  hue: number({ min: 0, max: 0.5 }),
  /** p of the photometric step (photometricOps). */
  photometricProbability: number(unit),
  /**
   * What the photometric step applies: 'all' — posterize, sharpness, solarize and autocontrast in turn, as VISSL's
   * PIRL (the paper preset); 'one' — one of them, drawn (the small preset's, as the demo measured it).
   */
  photometricOps: oneOf<PhotometricOps>(['one', 'all']),
  grayscaleProbability: number(unit),
  flipProbability: number(unit),
};
export type SamplerConfig = Resolved<typeof SAMPLER>;
/** A preset name, or a preset (default: the recipe's) with some fields overridden. */
export type SamplerOptions = SamplerPreset | (Options<typeof SAMPLER> & { preset?: SamplerPreset });

const AUGMENTATIONS = {
  imageScaleMin: 0.08, imageScaleMax: 1, jigsawScaleMin: 0.6, jigsawScaleMax: 1,
  brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.2,
  photometricProbability: 0.66, grayscaleProbability: 0.2, flipProbability: 0.5,
};
/** paper: 224 / 255 / 64, VISSL's photometric step; small (28–96 px data sets): 32 / 36 / 9 — the paper's ratios — and one photometric op. */
export const PRESETS: Readonly<Record<SamplerPreset, Readonly<SamplerConfig>>> = Object.freeze({
  paper: Object.freeze({ imageSize: 224, jigsawSize: 255, patchSize: 64, ...AUGMENTATIONS, photometricOps: 'all' as const }),
  small: Object.freeze({ imageSize: 32, jigsawSize: 36, patchSize: 9, ...AUGMENTATIONS, photometricOps: 'one' as const }),
});
export const PRESET_NAMES = Object.keys(PRESETS) as SamplerPreset[];
/** The sampler of a Loader or a preview given none, and of the default recipe. */
export const DEFAULT_PRESET: SamplerPreset = 'small';

// Sampler options as given (a preset's name, or a preset and overrides): the preset they start from (else `fallback`)
// and the overrides.
function samplerSpec(arg: string, given: unknown, fallback: SamplerConfig, complete: boolean): { base: SamplerConfig; overrides: Record<string, unknown> } {
  const spec = typeof given === 'string' && !complete ? { preset: given } : given === undefined && !complete ? {} : checkObject(arg, given);
  const { preset, ...overrides } = spec as { preset?: unknown };
  return { base: preset === undefined ? fallback : PRESETS[checkOneOf(`${arg}.preset`, preset, PRESET_NAMES)], overrides };
}

function resolveSampler(arg: string, given: unknown, fallback: SamplerConfig, complete = false): SamplerConfig {
  const { base, overrides } = samplerSpec(arg, given, fallback, complete);
  const c = resolve(SAMPLER, base, overrides, arg, complete);
  checkJigsawGeometry(arg, c.jigsawSize, c.patchSize);
  if (c.imageScaleMin > c.imageScaleMax) throw rangeError(`${arg}.imageScaleMin`, `at most imageScaleMax = ${c.imageScaleMax}`, c.imageScaleMin);
  if (c.jigsawScaleMin > c.jigsawScaleMax) throw rangeError(`${arg}.jigsawScaleMin`, `at most jigsawScaleMax = ${c.jigsawScaleMax}`, c.jigsawScaleMin);
  return c;
}

/**
 * The side a folder's images are stored at (decoded once): room for the crops of `sampler` (a preset's name, or options
 * as a Loader takes them), 64 px at least.
 */
export function folderImageSize(sampler: SamplerOptions = DEFAULT_PRESET): number {
  // Each option checked (a misspelt one, imagesize, was ignored and the preset's side given); how the crops fit
  // together is the Loader's to check.
  const { base, overrides } = samplerSpec('sampler', sampler, PRESETS[DEFAULT_PRESET], false);
  const { imageSize, jigsawSize } = resolve(SAMPLER, base, overrides, 'sampler', false);
  return Math.max(64, Math.ceil((Math.max(imageSize, jigsawSize) * 8) / 7));
}

const sampler = (): Field<SamplerConfig, SamplerOptions> => ({ expected: "'paper', 'small' or an object", resolve: resolveSampler });

/** A full, checked sampler config from a preset name or a preset plus overrides (default: DEFAULT_PRESET). */
export function resolveSamplerConfig(config?: SamplerOptions, arg = 'config'): SamplerConfig {
  return resolveSampler(arg, config, PRESETS[DEFAULT_PRESET]);
}

// ---------------------------------------------------------------------------------------------------
// Data-parallel training (docs/distributed.md): one process per rank, started by torchrun, Slurm,
// Kubernetes or `pirl train --nproc N`; each trains on its shard of every global batch.

const text = (expected: string): Field<string> =>
  leaf(expected, (arg, v) => {
    if (typeof v !== 'string' || v.length === 0) throw typeError(arg, expected, v);
    return v;
  });

const DISTRIBUTED = {
  rank: integer({ min: 0, max: 65_535 }),
  worldSize: integer({ min: 1, max: 65_536 }),
  /** This rank's index on its host (torchrun's LOCAL_RANK): with device 'cuda', the GPU it trains on (null: rank mod localWorldSize). */
  localRank: nullable(integer({ min: 0, max: 65_535 })),
  /** The ranks on this host (torchrun's LOCAL_WORLD_SIZE; null: not known): all of them (= worldSize) keeps Gloo on loopback. */
  localWorldSize: nullable(integer({ min: 1, max: 65_536 })),
  /** The rendezvous across hosts: a TCPStore at masterAddr:masterPort, served by rank 0. */
  masterAddr: text('a host name or address'),
  masterPort: integer({ min: 1, max: 65_535 }),
  /** The TCPStore is served by the launcher (torchrun's agent: TORCHELASTIC_USE_AGENT_STORE), so rank 0 connects to it as well. */
  launcherStore: boolean(),
  /** The launcher's restarts so far (TORCHELASTIC_RESTART_COUNT): each restart's keys in its store apart. */
  restartCount: integer({ min: 0, max: 1_000_000 }),
  /** The rendezvous of the ranks of one host instead: a fresh file they all reach (nothing listens on the network). */
  storeFile: nullable(text('a file path')),
  /**
   * The address Gloo's sockets bind to. null: 127.0.0.1 when every rank is on this host (a store file,
   * localWorldSize = worldSize, or a loopback masterAddr with localWorldSize unknown); otherwise decided
   * when joining — this host's address on the route to masterAddr (its name's, for a loopback masterAddr).
   */
  bindAddress: nullable(text('an address')),
  /** Instead of bindAddress: the network interfaces Gloo uses, comma-separated (GLOO_SOCKET_IFNAME, as PyTorch). */
  bindInterface: nullable(text('interface names, comma-separated')),
  /** A collective, or the rendezvous, that takes longer fails the run (a rank that exits is noticed at once); PyTorch's 30 minutes, so that rank 0's kNN pass or checkpoint does not time the others out. */
  timeoutMs: integer({ min: 1, max: 86_400_000 }),
};
export type DistributedOptions = Options<typeof DISTRIBUTED>;
export type ResolvedDistributedOptions = Resolved<typeof DISTRIBUTED>;
const DISTRIBUTED_DEFAULTS: ResolvedDistributedOptions = {
  rank: 0, worldSize: 1, localRank: null, localWorldSize: null, masterAddr: '127.0.0.1', masterPort: 29_500, launcherStore: false, restartCount: 0,
  storeFile: null, bindAddress: null, bindInterface: null, timeoutMs: 1_800_000,
};

export const isLoopback = (host: string): boolean => host === 'localhost' || /^127\./.test(host) || host === '::1';

export function resolveDistributedOptions(options: DistributedOptions = {}, arg = 'options.distributed'): ResolvedDistributedOptions {
  const d = resolve(DISTRIBUTED, DISTRIBUTED_DEFAULTS, options, arg);
  if (d.rank >= d.worldSize) throw rangeError(`${arg}.rank`, `below worldSize = ${d.worldSize}`, d.rank);
  if (d.localWorldSize !== null && d.localWorldSize > d.worldSize) throw rangeError(`${arg}.localWorldSize`, `at most worldSize = ${d.worldSize}`, d.localWorldSize);
  if (d.localRank !== null && d.localWorldSize !== null && d.localRank >= d.localWorldSize) {
    throw rangeError(`${arg}.localRank`, `below localWorldSize = ${d.localWorldSize}`, d.localRank);
  }
  if (d.bindAddress !== null && d.bindInterface !== null) {
    throw rangeError(`${arg}.bindInterface`, `null when bindAddress is given ('${d.bindAddress}'): Gloo binds to one or the other`, d.bindInterface);
  }
  const oneHost = d.storeFile !== null || d.localWorldSize === d.worldSize || (d.localWorldSize === null && isLoopback(d.masterAddr));
  return { ...d, bindAddress: d.bindAddress ?? (d.bindInterface === null && oneHost ? '127.0.0.1' : null) };
}

/**
 * A data-parallel process's options from the environment torchrun (and `pirl train --nproc`) sets:
 * RANK, WORLD_SIZE, LOCAL_RANK (else Slurm's SLURM_LOCALID), LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
 * TORCHELASTIC_USE_AGENT_STORE, TORCHELASTIC_RESTART_COUNT, PyTorch's GLOO_SOCKET_IFNAME, and pirl's
 * PIRL_STORE_FILE / PIRL_BIND_ADDRESS / PIRL_DIST_TIMEOUT_MS; null when WORLD_SIZE is unset (a single
 * process). Errors name the variable.
 */
export function distributedFromEnv(env: NodeJS.ProcessEnv = process.env): ResolvedDistributedOptions | null {
  if (env.WORLD_SIZE === undefined) {
    // A rank of a launch that lost its WORLD_SIZE would train as a run of its own.
    if (env.RANK !== undefined && env.RANK !== '') throw typeError('$WORLD_SIZE', `set with RANK = ${env.RANK} (torchrun sets RANK and WORLD_SIZE together)`, undefined);
    return null;
  }
  type Kind = 'integer' | 'text' | 'torch boolean';
  const vars: Array<[keyof ResolvedDistributedOptions, string, Kind]> = [
    ['rank', 'RANK', 'integer'], ['worldSize', 'WORLD_SIZE', 'integer'], ['localRank', 'SLURM_LOCALID', 'integer'], ['localRank', 'LOCAL_RANK', 'integer'],
    ['localWorldSize', 'LOCAL_WORLD_SIZE', 'integer'], ['masterAddr', 'MASTER_ADDR', 'text'], ['masterPort', 'MASTER_PORT', 'integer'],
    ['launcherStore', 'TORCHELASTIC_USE_AGENT_STORE', 'torch boolean'], ['restartCount', 'TORCHELASTIC_RESTART_COUNT', 'integer'],
    ['storeFile', 'PIRL_STORE_FILE', 'text'], ['bindAddress', 'PIRL_BIND_ADDRESS', 'text'], ['bindInterface', 'GLOO_SOCKET_IFNAME', 'text'],
    ['timeoutMs', 'PIRL_DIST_TIMEOUT_MS', 'integer'],
  ];
  // Each variable checked by its option's own check, under its own name (a later one of a key wins).
  const given: Record<string, unknown> = {};
  const source: Record<string, string> = {}; // option → the variable that gave it
  for (const [key, name, kind] of vars) {
    const v = env[name];
    if (v === undefined || v === '') continue;
    const field = DISTRIBUTED[key] as Field<unknown>;
    const value = kind === 'integer' && /^\d+$/.test(v) ? Number(v) : kind === 'torch boolean' && /^(True|False)$/.test(v) ? v === 'True' : v;
    given[key] = field.resolve(`$${name}`, value, DISTRIBUTED_DEFAULTS[key], false);
    source[key] = name;
  }
  for (const [key, name] of vars.slice(0, 2)) {
    if (given[key] === undefined) throw typeError(`$${name}`, 'set (torchrun sets RANK and WORLD_SIZE together)', undefined);
  }
  if ((given.rank as number) >= (given.worldSize as number)) throw rangeError('$RANK', `below WORLD_SIZE = ${given.worldSize}`, given.rank);
  // As PyTorch's env:// rendezvous: ranks that meet over the network are told where (a default could wait on the wrong host).
  if ((given.worldSize as number) > 1 && given.storeFile === undefined) {
    for (const name of ['MASTER_ADDR', 'MASTER_PORT']) {
      if (!env[name]) throw typeError(`$${name}`, `set with WORLD_SIZE = ${given.worldSize} (where rank 0's rendezvous is; torchrun sets it)`, env[name]);
    }
  }
  if (given.bindAddress !== undefined && given.bindInterface !== undefined) {
    throw typeError('$GLOO_SOCKET_IFNAME', `unset when PIRL_BIND_ADDRESS is set ('${given.bindAddress}'): Gloo binds to one or the other`, given.bindInterface);
  }
  try {
    return resolveDistributedOptions(given, 'environment');
  } catch (err) {
    // The checks across options, told in the variables' names.
    if (!isArgumentError(err) || !err.argument.startsWith('environment.')) throw err;
    const named = (key: string) => source[key] ?? key;
    const expected = err.expected.replace(/\b(\w+)(?= =)/g, (key) => named(key));
    throw rangeError(`$${named(err.argument.slice('environment.'.length))}`, expected, err.received);
  }
}

// ---------------------------------------------------------------------------------------------------
// Optimizer and schedule (docs/PIRL.md, "Optimisation"), and the training run that uses them all.

const OPTIMIZER = {
  epochs: integer({ min: 1, max: 1_000_000 }),
  batchSize: integer({ min: 1, max: 65_536 }),
  /** lr = baseLr·batchSize/256 (0.03 in the paper). At most 10^30: past float32's range SGD failed in libtorch's words. */
  baseLr: number({ min: 0, max: 1e30 }),
  /** Linear warm-up, in epochs (fractions allowed). */
  warmupEpochs: number({ min: 0, max: 1_000_000 }),
  /** Where the cosine decay ends, as a fraction of the peak: the last step's lr with lrUpdate 'step'. */
  finalLrRatio: number(unit),
  /**
   * How often the lr changes: 'step' — the cosine followed every step (smooth; measured to work); 'epoch' — once per
   * epoch, as VISSL's PIRL config (`update_interval: epoch`), its warm-up then whole epochs.
   */
  lrUpdate: oneOf(LR_UPDATES),
  /** SGD momentum. */
  momentum: number(belowOne),
  /** On convolution and linear weights only, not BatchNorm or biases. */
  weightDecay: number({ min: 0 }),
  /** Batches per epoch at most (null: the whole data set). */
  epochLength: nullable(integer({ min: 1, max: Number.MAX_SAFE_INTEGER })),
};

const PRECISIONS = ['fp32', 'bf16', 'fp16'] as const;
export type Precision = (typeof PRECISIONS)[number];

export const RECIPES = ['default', 'paper'] as const;
export type Recipe = (typeof RECIPES)[number];

export const TRAIN = {
  /**
   * The defaults every other option starts from: 'default' — measured to learn in short runs (README
   * "The demo": InfoNCE, bank from features, lr 0.12, ResNet-18 with the small stem); 'paper' — the
   * paper's setup (ResNet-50, 224-px views, NCE with Z frozen, random bank, lr 0.03, batch 1024 per process: the
   * paper's global batch, so on N ranks give batchSize 1024/N; docs/PIRL.md lists where pirl differs).
   */
  recipe: oneOf(RECIPES),
  model: nested(MODEL),
  loss: nested(LOSS),
  sampler: sampler(),
  ...OPTIMIZER,
  /**
   * The memory bank's first rows: 'random' (the paper) or 'features' — each sample's f embedding from
   * the initial model (eval transform), so the first epoch's positives carry the images' similarities.
   */
  bankInit: oneOf<'random' | 'features'>(['random', 'features']),
  /**
   * What the trunk and heads compute in: 'fp32', or autocast to 'bf16' (CPU or CUDA) or 'fp16' (CUDA,
   * with a dynamic loss scale); the NCE loss, the bank and the weights stay fp32.
   */
  precision: oneOf(PRECISIONS),
  /**
   * Data-parallel runs: BatchNorm's statistics over every rank's batch together (SyncBatchNorm), so that N
   * ranks of B images train as one process of N·B would (to float rounding); false: each rank's own B
   * (DDP's default, no extra communication). Ignored by a process alone.
   */
  syncBatchNorm: boolean(),
  seed: RUN.seed,
  device: RUN.device,
};
export type TrainConfig = Options<typeof TRAIN>;
export type ResolvedTrainConfig = Resolved<typeof TRAIN>;

const DEFAULT_RECIPE: ResolvedTrainConfig = {
  recipe: 'default',
  model: { arch: 'resnet18', stem: 'small', width: 1, embeddingDim: 128, channelsLast: true, patchRunningStats: false, seed: 0 },
  loss: {
    lambda: 0.5, tau: 0.07, negatives: 4096, momentum: 0.5, mode: 'infonce', z: 'ema', zMomentum: 0.99,
    sharedNegatives: false, excludePositive: false,
  },
  sampler: PRESETS[DEFAULT_PRESET],
  epochs: 10, batchSize: 128, baseLr: 0.12, warmupEpochs: 0, finalLrRatio: 1e-3, lrUpdate: 'step', momentum: 0.9, weightDecay: 1e-4,
  epochLength: null, bankInit: 'features', precision: 'fp32', syncBatchNorm: false, seed: RUN_DEFAULTS.seed, device: RUN_DEFAULTS.device,
};

/** The paper's batch: 32 images per GPU on 32 GPUs. */
export const PAPER_BATCH_SIZE = 1024;

const PAPER_RECIPE: ResolvedTrainConfig = {
  ...DEFAULT_RECIPE,
  recipe: 'paper',
  model: { ...DEFAULT_RECIPE.model, arch: 'resnet50', stem: 'imagenet', patchRunningStats: true },
  loss: { ...DEFAULT_RECIPE.loss, negatives: 32_000, mode: 'nce', z: 'frozen' },
  sampler: PRESETS.paper,
  epochs: 800, batchSize: PAPER_BATCH_SIZE, baseLr: 0.03, bankInit: 'random',
};

const RECIPE_DEFAULTS: Record<Recipe, ResolvedTrainConfig> = { default: DEFAULT_RECIPE, paper: PAPER_RECIPE };

/** What resolveTrainConfig() gives, read without its checks (the command line's usage: the addon need not load). */
export const DEFAULT_TRAIN_CONFIG: DeepReadonly<ResolvedTrainConfig> = DEFAULT_RECIPE;

// ---------------------------------------------------------------------------------------------------
// Loader: batches of the two views in an order fixed by (seed, epoch) (docs/PIRL.md, "Data").

export const LOADER = {
  batchSize: OPTIMIZER.batchSize,
  shuffle: boolean(),
  /** Drop the last, smaller batch of an epoch (BatchNorm and the NCE loss like full batches). */
  dropLast: boolean(),
  /** Batches per epoch at most (null: the whole data set). */
  epochLength: OPTIMIZER.epochLength,
  seed: RUN.seed,
  config: sampler(),
  /** Batches made ahead of the consumer, each on a thread of its own (a lane). */
  prefetch: countUpTo('LanesHandle.maxCount', () => binding.LanesHandle.maxCount),
  /** Make batches in page-locked memory, for non-blocking copies to a GPU. Needs a CUDA device. */
  pinMemory: boolean(),
  /**
   * Where batches are delivered. A CUDA device: images and patches are made in pinned memory and copied
   * to it on a side stream while the consumer's step computes, then handed over there (permutations and
   * indices stay on the host). The Trainer delivers to its model's device.
   */
  device: RUN.device,
  /**
   * Data-parallel training: this process is rank `rank` of `count`, and takes the rank-th batchSize
   * samples of every global batch of batchSize·count (the same order on every rank, disjoint shards).
   */
  shard: whole({ rank: integer({ min: 0 }), count: integer({ min: 1 }) }),
};
export type LoaderOptions = Options<typeof LOADER>;
export type ResolvedLoaderOptions = Resolved<typeof LOADER>;
const LOADER_DEFAULTS: ResolvedLoaderOptions = {
  batchSize: DEFAULT_RECIPE.batchSize, shuffle: true, dropLast: true, epochLength: null, seed: RUN_DEFAULTS.seed,
  config: DEFAULT_RECIPE.sampler, prefetch: 2, pinMemory: false, device: RUN_DEFAULTS.device, shard: { rank: 0, count: 1 },
};

export function resolveLoaderOptions(options: LoaderOptions = {}, arg = 'options'): ResolvedLoaderOptions {
  const o = resolve(LOADER, LOADER_DEFAULTS, options, arg);
  if (o.shard.rank >= o.shard.count) throw rangeError(`${arg}.shard.rank`, `an integer in [0, ${o.shard.count - 1}]`, o.shard.rank);
  if (o.shard.count > 1 && !o.dropLast) throw rangeError(`${arg}.dropLast`, 'true when the data is sharded (every rank takes a full batch)', false);
  return o;
}

/** The model options that a model's weights fix: a run started from them (Trainer.create's options.init) takes these. */
export const WEIGHTS_SHAPE = ['arch', 'stem', 'width', 'embeddingDim'] as const;

/** A model whose weights a run starts from: the options they fix (a trunk's, not embeddingDim), and how it was given (for errors: 'options.init'). */
export interface StartingModel {
  options: Partial<Pick<ResolvedModelOptions, (typeof WEIGHTS_SHAPE)[number]>>;
  name: string;
}

/**
 * A training run's every option: the recipe's defaults (config.recipe, default 'default') under what
 * is given; with `complete` (a checkpoint's config) every option must be given. A run from `start`'s weights takes
 * their shape (WEIGHTS_SHAPE) where config.model leaves it out, and refuses another.
 */
export function resolveTrainConfig(config: TrainConfig = {}, arg = 'config', complete = false, start?: StartingModel): ResolvedTrainConfig {
  const checked = config === undefined ? {} : checkObject(arg, config);
  const fixed = WEIGHTS_SHAPE.filter((k) => start?.options[k] !== undefined);
  const shape = Object.fromEntries(fixed.map((k) => [k, start!.options[k]]));
  const model = checked.model ?? {};
  // A model given that is not an object is left for resolve() to refuse.
  const given = start && typeof model === 'object' && model !== null && !Array.isArray(model) ? { ...checked, model: { ...shape, ...model } } : checked;
  const recipe = RECIPE_DEFAULTS[checkOneOf(`${arg}.recipe`, given.recipe ?? (complete ? undefined : 'default'), RECIPES)];
  // The model is seeded by the run's seed unless model.seed says otherwise.
  // Checked here, under its own name, before it stands in for model.seed.
  const runSeed = given.seed === undefined ? recipe.seed : TRAIN.seed.resolve(`${arg}.seed`, given.seed as number, recipe.seed, complete);
  const c = resolve(TRAIN, { ...recipe, model: { ...recipe.model, seed: runSeed } }, given, arg, complete);
  for (const k of fixed) { // before what follows from the shape (the sampler a stem needs)
    const value = start!.options[k]!;
    if (c.model[k] !== value) throw rangeError(`${arg}.model.${k}`, `${typeof value === 'string' ? `'${value}'` : value}, the ${k} of ${start!.name} (the run starts from its weights)`, c.model[k]);
  }
  if (c.precision === 'fp16' && c.device === 'cpu') throw rangeError(`${arg}.precision`, "'fp32' or 'bf16' on the CPU (fp16 autocast needs CUDA)", c.precision);
  if (c.lrUpdate === 'epoch' && !Number.isInteger(c.warmupEpochs)) throw rangeError(`${arg}.warmupEpochs`, "whole epochs with lrUpdate 'epoch' (--lr-update epoch)", c.warmupEpochs);
  checkLoss(c.loss, `${arg}.loss`);
  checkSamplerFitsStem(c, arg);
  return c;
}

// The sampler's views must survive the stem's strides: refused with the config, before any image is decoded (the
// model's forward() would refuse them only at the first step).
function checkSamplerFitsStem(c: ResolvedTrainConfig, arg: string): void {
  const min = binding.minInputSize(c.model.stem);
  for (const key of ['imageSize', 'patchSize'] as const) {
    if (c.sampler[key] < min) {
      const remedy = c.model.stem === 'small' ? "a larger preset, e.g. 'paper'" : "a larger preset, e.g. 'paper', or the 'small' stem";
      throw rangeError(`${arg}.sampler.${key}`, `at least ${min} px for model.stem '${c.model.stem}' (${remedy})`, c.sampler[key]);
    }
  }
}

// One set of negatives for the whole batch cannot leave out each sample's own row: that option would be ignored.
function checkLoss(loss: ResolvedLossOptions, arg: string): ResolvedLossOptions {
  checkNceTau(loss, arg);
  if (loss.sharedNegatives && loss.excludePositive) {
    throw rangeError(`${arg}.excludePositive`, `false with ${arg}.sharedNegatives (one set of negatives for the whole batch cannot leave out each sample's own row)`, true);
  }
  return loss;
}

/** A model's options alone (PirlModel.create): the default recipe's model; `complete` for a model file's. */
export function resolveModelOptions(options: PirlModelOptions = {}, arg = 'options', complete = false): ResolvedModelOptions {
  return resolve(MODEL, DEFAULT_RECIPE.model, options, arg, complete);
}

/** μ of a memory bank update given alone (MemoryBank.update): the default recipe's. */
export function resolveBankMomentum(momentum: number | undefined, arg = 'momentum'): number {
  return LOSS.momentum.resolve(arg, momentum, DEFAULT_RECIPE.loss.momentum, false);
}

/** The PIRL loss's options alone (PirlLoss): the default recipe's loss. */
export function resolveLossOptions(options: PirlLossOptions = {}, arg = 'options'): ResolvedLossOptions {
  return checkLoss(resolve(LOSS, DEFAULT_RECIPE.loss, options, arg), arg);
}

// ---------------------------------------------------------------------------------------------------
// Memory bank (docs/PIRL.md, "Memory bank").

const MEMORY_BANK = {
  /** N: rows, one per training image. */
  size: integer({ min: 1, max: 2 ** 31 - 1 }),
  /** D: embedding width. */
  dim: MODEL.embeddingDim,
  /** Seeds the initial rows and every negative drawn from this bank. */
  seed: RUN.seed,
  device: RUN.device,
};
export type MemoryBankOptions = Options<typeof MEMORY_BANK> & { size: number };
export type ResolvedMemoryBankOptions = Resolved<typeof MEMORY_BANK>;

export function resolveMemoryBankOptions(options: MemoryBankOptions, arg = 'options'): ResolvedMemoryBankOptions {
  // size has no default: a bank has one row per training image, which only the caller knows.
  const { seed, device } = RUN_DEFAULTS;
  return resolve(MEMORY_BANK, { size: undefined as unknown as number, dim: DEFAULT_RECIPE.model.embeddingDim, seed, device }, options, arg);
}

// ---------------------------------------------------------------------------------------------------
// Evaluation protocols (docs/PIRL.md, "Evaluation protocols").

/** What an embedding is: the trunk's pooled res5 features, or the f head's. */
export const EMBED_LAYERS = ['res5', 'f'] as const;
export type EmbedLayer = (typeof EMBED_LAYERS)[number];
/** The largest side an image is decoded at or evaluated at. */
export const MAX_IMAGE_SIDE = 4096;

export type Normalization = Readonly<{ mean: readonly number[]; std: readonly number[] }>;
let normalizationRead: Normalization | undefined;

/** The per-channel mean and std every transform normalises RGB in [0, 1] by: ImageNet's, as the addon has them. */
export function normalization(): Normalization {
  normalizationRead ??= Object.freeze({ mean: Object.freeze([...binding.normalization.mean]), std: Object.freeze([...binding.normalization.std]) });
  return normalizationRead;
}

const FEATURES = {
  /** Side of the evaluation images; null: the side the model was trained at (its file says), else EVAL_SIZE. */
  size: nullable(size(MAX_IMAGE_SIDE)),
  /** Images per batch; null: 512, fewer of large images (PirlModel.embedBatchSize). */
  batchSize: nullable(integer({ min: 1, max: 65_536 })),
  /** The trunk's pooled res5 features (the transfer representation) or the f embedding (NPID's monitor). */
  layer: oneOf(EMBED_LAYERS),
  /**
   * An AbortController's: aborted, the pass stops before its next batch (a kNN after it, between chunks of 256 queries)
   * and rejects with code 'ABORT_ERR'.
   */
  signal: nullable(leaf('an AbortSignal', (arg, v) => {
    if (!(v instanceof AbortSignal)) throw typeError(arg, 'an AbortSignal', v);
    return v;
  })),
};
export type FeatureOptions = Options<typeof FEATURES>;
export type ResolvedFeatureOptions = Resolved<typeof FEATURES>;
const FEATURE_DEFAULTS: ResolvedFeatureOptions = { size: null, batchSize: null, layer: 'res5', signal: null };
/** The evaluation side of a model whose training size is unknown: the default preset's imageSize. */
export const EVAL_SIZE = PRESETS[DEFAULT_PRESET].imageSize;

export function resolveFeatureOptions(options: FeatureOptions = {}, arg = 'options'): ResolvedFeatureOptions {
  return resolve(FEATURES, FEATURE_DEFAULTS, options, arg);
}

const KNN = {
  ...FEATURES,
  /** Neighbours that vote (NPID: 200). */
  k: integer({ min: 1, max: 1_000_000 }),
  /** Votes weigh e^{s/τ}. */
  tau: number(positive),
};
export type KnnOptions = Options<typeof KNN>;
export type ResolvedKnnOptions = Resolved<typeof KNN>;

export const KNN_DEFAULTS: Readonly<ResolvedKnnOptions> = Object.freeze({ ...FEATURE_DEFAULTS, k: 200, tau: 0.07 });

export function resolveKnnOptions(options: KnnOptions = {}, arg = 'options'): ResolvedKnnOptions {
  return resolve(KNN, KNN_DEFAULTS, options, arg);
}

const LINEAR_PROBE = {
  /** The feature pass's side (as FeatureOptions.size); the pass sizes its own batches. */
  size: FEATURES.size,
  /** Stops the feature pass (as FeatureOptions.signal), and the probe's training between its steps. */
  signal: FEATURES.signal,
  /** The probe's training: epochs over the features. */
  epochs: OPTIMIZER.epochs,
  /** The probe's SGD batch of feature rows (not the feature pass's batch of images). */
  batchSize: OPTIMIZER.batchSize,
  /** The probe's, cosine-decayed over its epochs. */
  lr: number(positive),
  weightDecay: OPTIMIZER.weightDecay,
  seed: RUN.seed,
};
export type LinearProbeOptions = Options<typeof LINEAR_PROBE>;
export type ResolvedLinearProbeOptions = Resolved<typeof LINEAR_PROBE>;

export function resolveLinearProbeOptions(options: LinearProbeOptions = {}, arg = 'options'): ResolvedLinearProbeOptions {
  return resolve(LINEAR_PROBE, { size: FEATURE_DEFAULTS.size, signal: null, epochs: 30, batchSize: 256, lr: 0.1, weightDecay: 1e-4, seed: 0 }, options, arg);
}
