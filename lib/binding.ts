// The only file that loads the native addon. Everything else imports `binding` from here.
import * as path from 'path';

import { ADDON_NOT_LOADED } from './errors';
import type { Device, EmbedLayer, NceMode, ResolvedLinearProbeOptions, ResolvedLossOptions, ResolvedModelOptions, ResolvedTrainConfig, SamplerConfig } from './config';
import type { DType, TypedArray } from './tensor';

/** The native tensor handle (native/addon/tensor_wrap.cc). */
export interface TensorHandle {
  shape(): number[];
  dtype(): DType;
  device(): string;
  data(): TypedArray;
  rows(start: number, count: number): TensorHandle;
  dispose(): void;
  disposed(): boolean;
  to(device: string): Promise<TensorHandle>;
  /** Reports a batch's memory to V8, which the loader made unreported (once; nothing for other handles). */
  report(): void;
}

export interface NativeBuildInfo {
  libtorchVersion: string;
  libtorchLibrary: string;
  cudaCompiled: boolean;
  cudaAvailable: boolean;
  cudaDeviceCount: number;
  gloo: boolean;
  nccl: boolean;
  cxx11Abi: boolean;
  blas: { kind: 'openblas' | 'mkl' | 'reference' | 'other' | 'none'; library: string };
  numThreads: number;
  numInteropThreads: number;
  parallelBackend: string;
  napiVersion: number;
  /** setNumThreads refuses more. */
  maxThreads: number;
}

/** A request to stop native work (native/addon/eval_wrap.cc). */
export interface StopHandle {
  request(): void;
}

/** The native memory bank handle (native/addon/memory_bank_wrap.cc). */
export interface MemoryBankHandle {
  size(): number;
  dim(): number;
  rows(): TensorHandle;
  get(indices: TensorHandle): Promise<TensorHandle>;
  update(indices: TensorHandle, fHat: TensorHandle, momentum: number): Promise<void>;
  sampleNegatives(batch: number, k: number, excludePositives: TensorHandle | null): Promise<TensorHandle>;
  sampleShared(k: number): Promise<TensorHandle>;
  generatorState(): TensorHandle;
  dispose(): void;
  disposed(): boolean;
}

export interface NativeNceResult {
  loss: number;
  zUsed: number;
  zBatch: number;
  grad: TensorHandle;
}

export interface NativePirlLossResult {
  loss: number;
  lossImage: number;
  lossJigsaw: number;
  zImage: number;
  zJigsaw: number;
  gradF: TensorHandle;
  gradG: TensorHandle;
}

/** The native PIRL loss handle (native/addon/pirl_loss_wrap.cc). */
export interface PirlLossHandle {
  compute(bank: MemoryBankHandle, f: TensorHandle, g: TensorHandle, indices: TensorHandle): Promise<NativePirlLossResult>;
  z(): { image: number; jigsaw: number };
  setZ(image: number, jigsaw: number): void;
}

export type StateDictScope = 'all' | 'trunk';

/** The native model handle (native/addon/model_wrap.cc). */
export interface PirlModelHandle {
  forward(images: TensorHandle, patches: TensorHandle): Promise<{ f: TensorHandle; g: TensorHandle }>;
  embed(images: TensorHandle, layer: EmbedLayer, batchSize: number): Promise<TensorHandle>;
  setTraining(training: boolean): void;
  isTraining(): boolean;
  info(): {
    parameters: { trunk: number; fHead: number; gHead: number; total: number };
    featureDim: number;
    device: string;
  };
  stateDict(scope: StateDictScope): Promise<{ names: string[]; tensors: TensorHandle[] }>;
  loadStateDict(scope: StateDictScope, names: string[], tensors: TensorHandle[], strict: boolean): Promise<void>;
  to(device: string): Promise<void>;
  dispose(): void;
  disposed(): boolean;
  retain(): PirlModelHandle;
}

export interface StepResult {
  loss: number;
  lossImage: number;
  lossJigsaw: number;
  gradNorm: number;
  /** false: fp16 gradients overflowed; the step was skipped and the loss scale halved. */
  applied: boolean;
  /** A rank asked to stop (alone: this process did): every rank stops after this step. */
  stop: boolean;
  /** The step's forward, loss and backward were a replay of its captured CUDA graph (option cudaGraphs). */
  replayed: boolean;
}

/** What a checkpoint holds of the native training state besides the tensors. */
export interface NativeTrainScalars {
  zImage: number;
  zJigsaw: number;
  lossScale: number;
  goodSteps: number;
  /** Steps taken (a batch with no readable image takes none): where the negatives' streams are. */
  steps: number;
}

/** One thing every rank must agree on before they train together: compared with rank 0's when joining. */
export interface Term {
  name: string;
  value: string;
  /** What the ranks must do when they differ. */
  hint: string;
}

/** A rank's way into its data-parallel group ('' = no store file / bind to this host's name; native/core/distributed/communicator.h). */
export interface CommunicatorOptions {
  storeFile: string; masterAddr: string; masterPort: number; rank: number; worldSize: number; bindAddress: string; timeoutMs: number;
  device: string; bindInterface: string; launcherStore: boolean; restartCount: number;
  terms: Term[];
}

/** The native training state (native/addon/train_wrap.cc). */
export interface TrainerHandle {
  step(images: TensorHandle, patches: TensorHandle, indices: TensorHandle, lr: number, stop: boolean): Promise<StepResult>;
  /** Z, the loss scaler, the step count and the momentum, taken on the model's thread. */
  state(): Promise<NativeTrainScalars & { momentum: { names: string[]; tensors: TensorHandle[] } }>;
  setState(scalars: NativeTrainScalars, names: string[], tensors: TensorHandle[]): Promise<void>;
  /** Joins a data-parallel group and takes rank 0's state. */
  distribute(options: CommunicatorOptions, syncBatchNorm: boolean): Promise<void>;
  /** [begin, end): the bank rows this rank embeds for bankInit 'features' (alone: all of them). */
  bankShard(): [number, number];
  /** Sends each rank's shard of the bank to every replica (after each filled its own). */
  shareBankShards(): Promise<void>;
  /** Whether any rank asks to stop (`stop`: this one's ask), once every rank has voted; alone, `stop`. */
  agreeToStop(stop: boolean): Promise<boolean>;
  /** Settles once the trainer's state is released (on the model's thread, after the calls before it). */
  dispose(): Promise<void>;
}

/** A loader's threads, one per batch in flight (prefetch); they end with the handle. */
export interface LanesHandle {
  readonly __lanes: never;
  /** Frees the batch memory kept for the next batches, on a lane after the batches queued there. */
  trimBuffers(): void;
  /** How many freed batch buffers are kept for reuse (for tests). */
  keptBuffers(): number;
}

/** Everything the addon exports, typed once. */
export interface Binding {
  TensorHandle: abstract new (...args: never[]) => TensorHandle;
  fromArray(data: TypedArray, shape: readonly number[], dtype: DType): TensorHandle;
  /** New CPU tensors read from an open file descriptor at the given offsets; `file` names it in errors. */
  readTensors(fd: number, file: string, spans: ReadonlyArray<{ what: string; offset: number; dtype: DType; shape: readonly number[] }>): Promise<TensorHandle[]>;
  /** Each tensor's bytes written one after another from `offset` of an open file descriptor. */
  writeTensors(fd: number, file: string, offset: number, tensors: readonly TensorHandle[]): Promise<void>;
  zeros(shape: readonly number[], dtype: DType, device: string): TensorHandle;
  empty(shape: readonly number[], dtype: DType, device: string): TensorHandle;
  matmul(a: TensorHandle, b: TensorHandle): Promise<TensorHandle>;
  conv2d(
    input: TensorHandle,
    weight: TensorHandle,
    bias: TensorHandle | null,
    stride: readonly number[],
    padding: readonly number[],
  ): Promise<TensorHandle>;
  MemoryBankHandle: abstract new (...args: never[]) => MemoryBankHandle;
  PirlModelHandle: abstract new (...args: never[]) => PirlModelHandle;
  createMemoryBank(size: number, dim: number, seed: number, device: string): Promise<MemoryBankHandle>;
  restoreMemoryBank(rows: TensorHandle, generator: TensorHandle, device: string, rowsName: string, generatorName: string): Promise<MemoryBankHandle>;
  nceLoss(
    x: TensorHandle,
    bank: TensorHandle,
    positives: TensorHandle,
    negatives: TensorHandle,
    tau: number,
    mode: NceMode,
    z: number,
    memoryBank: MemoryBankHandle | null,
  ): Promise<NativeNceResult>;
  PirlLossHandle: new (options: ResolvedLossOptions) => PirlLossHandle;
  createPirlModel(options: ResolvedModelOptions): Promise<PirlModelHandle>;
  /** The smallest image side a trunk with `stem` accepts. */
  minInputSize(stem: ResolvedModelOptions['stem']): number;
  LanesHandle: { new (count: number): LanesHandle; readonly maxCount: number };
  makeBatch(
    source: TensorHandle,
    rows: TensorHandle,
    indices: TensorHandle,
    seed: number,
    epoch: number,
    config: SamplerConfig,
    pinned: boolean,
    device: Device,
    /** The thread it is made on: lane `lane` of `lanes` (a loader's batch i on lane i mod prefetch). */
    lanes: LanesHandle,
    lane: number,
  ): Promise<{ images: TensorHandle; patches: TensorHandle; permutations: TensorHandle }>;
  evalImages(source: TensorHandle, rows: TensorHandle, size: number): Promise<TensorHandle>;
  TrainerHandle: new (
    model: PirlModelHandle,
    bank: MemoryBankHandle,
    loss: ResolvedLossOptions,
    step: Pick<ResolvedTrainConfig, 'momentum' | 'weightDecay' | 'precision' | 'seed'> & { cudaGraphs: boolean },
  ) => TrainerHandle;
  /** Tells the ranks meeting at `options`' rendezvous that this one cannot start (`why`); settles once they have all heard. */
  failToJoin(options: CommunicatorOptions, why: string): Promise<void>;
  /** What an AbortSignal's listener requests of native work given it: the work stops between its pieces. */
  StopHandle: new () => StopHandle;
  knnPredict(
    trainFeatures: TensorHandle,
    trainLabels: TensorHandle,
    testFeatures: TensorHandle,
    k: number,
    tau: number,
    numClasses: number,
    stop: StopHandle | null,
  ): Promise<TensorHandle>;
  nearestNeighbours(features: TensorHandle, queries: TensorHandle, k: number, stop: StopHandle | null): Promise<{ similarity: TensorHandle; index: TensorHandle }>;
  linearProbeFit(
    features: TensorHandle,
    labels: TensorHandle,
    numClasses: number,
    options: Omit<ResolvedLinearProbeOptions, 'size' | 'signal'>,
    stop: StopHandle | null,
  ): Promise<{ mean: TensorHandle; std: TensorHandle; weight: TensorHandle; bias: TensorHandle }>;
  linearProbePredict(mean: TensorHandle, std: TensorHandle, weight: TensorHandle, bias: TensorHandle, features: TensorHandle): Promise<TensorHandle>;
  buildInfo(): NativeBuildInfo;
  /** The per-channel mean and std the transforms normalise by (native/core/data/transforms.h). */
  normalization: { mean: number[]; std: number[] };
  /** null in a build without CUDA. */
  cudaMemory(device: number, resetPeak: boolean): { allocated: number; peakAllocated: number; reserved: number; peakReserved: number } | null;
  setNumThreads(n: number): void;
  /** setNumThreads unless this process set a count already (another Worker's pirl): false then. */
  setDefaultNumThreads(n: number): boolean;
  getNumThreads(): number;
  setTf32(convolutions: boolean, matmul: boolean): void;
  getTf32(): { convolutions: boolean; matmul: boolean };
  setDeterministic(on: boolean): void;
  getDeterministic(): boolean;
}

export const packageRoot = path.join(__dirname, '..');

/** What scripts/libtorch.js reports of a libtorch (the fields the loader and `pirl info` use). */
export interface LibtorchFound {
  source: string;
  torchDir: string;
  version: string;
  libDir: string | null;
  cuda: boolean;
  cudaVersion: string | null;
  /** The prebuild folder for it, e.g. torch-1.13-cpu; null when its version is unknown. */
  tag: string | null;
}

export interface LoadedAddon {
  binding: Binding;
  path: string;
  kind: 'build' | 'prebuild';
  libtorch: LibtorchFound;
}

const SOLUTIONS_FOR_LIBTORCH = [
  '- Debian/Ubuntu, as root: apt-get install libtorch-dev libopenblas0-pthread',
  '- PyTorch for python3 (pip install torch): found through the torch package python3 imports',
  '- Another libtorch (CPU or CUDA, unpacked from pytorch.org): set LIBTORCH=/path/to/libtorch',
  '- See which libtorch would be used: node node_modules/pirl/scripts/libtorch.js',
];

/** The errors scripts/addon.js throws with the whole explanation in their message. */
function addonErrorCode(err: unknown): 'PIRL_NO_PREBUILD' | 'PIRL_NO_LIBTORCH' | null {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'PIRL_NO_PREBUILD' || code === 'PIRL_NO_LIBTORCH' ? code : null;
}

/** Why the addon did not load, and what to run about it, in the style of sharp's "Possible solutions". */
export function explainLoadFailure(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const code = addonErrorCode(err);
  if (code === 'PIRL_NO_PREBUILD') {
    // scripts/addon.js names the libtorch, the prebuilds and the one command that builds for it.
    return `pirl: could not load the native addon: ${message}`;
  }
  if (code === 'PIRL_NO_LIBTORCH') {
    return ['pirl: could not load the native addon.', `Cause: ${message}`, 'Possible solutions:', ...SOLUTIONS_FOR_LIBTORCH].join('\n');
  }
  let cause: string;
  const missing = /(lib[\w.+-]+\.so[\w.]*): cannot open shared object file/.exec(message);
  if (missing && /torch|c10/.test(missing[1])) {
    cause = `libtorch is missing: ${missing[1]} could not be found by the dynamic loader.`;
  } else if (missing) {
    cause = `a shared library the addon needs is missing: ${missing[1]}.`;
  } else if (/undefined symbol/.test(message)) {
    cause = 'the addon was built against a different libtorch than the one found now (ABI mismatch).';
  } else {
    cause = `the addon failed to load: ${message}`;
  }
  return [
    'pirl: could not load the native addon.',
    `Cause: ${cause}`,
    `Loader said: ${message.split('\n')[0]}`,
    'Possible solutions:',
    ...SOLUTIONS_FOR_LIBTORCH,
    '- Build the addon for the libtorch you have: node node_modules/pirl/scripts/install.js',
    '  (npm 11 skips dependencies\' install scripts unless allowed: allow pirl in your npm allowScripts)',
  ].join('\n');
}

function load(): LoadedAddon {
  try {
    // Plain JS shared with the install step; it asks scripts/libtorch.js which libtorch is present.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { loadAddon } = require('../scripts/addon') as { loadAddon(root: string): LoadedAddon };
    return loadAddon(packageRoot);
  } catch (err) {
    const error = Object.assign(new Error(explainLoadFailure(err)), { code: ADDON_NOT_LOADED });
    // The dynamic loader's own error stays attached; scripts/addon.js's would print the same text twice.
    if (!addonErrorCode(err)) (error as Error & { cause?: unknown }).cause = err;
    throw error;
  }
}

let loaded: LoadedAddon | undefined;
let onLoad: (() => void) | undefined;
// onLoad has run to its end (it may use the addon meanwhile); until then each use runs it, and meets its error again.
let ready = false;

/**
 * The addon, loaded at its first use: `require('pirl')` uses it at once (index.ts), while the command line's help
 * and flag mistakes answer without the ~1 s libtorch takes to load. A failure throws ADDON_NOT_LOADED, each time.
 */
export function loadedAddon(): LoadedAddon {
  loaded ??= load();
  if (!ready) {
    ready = true;
    try {
      onLoad?.();
    } catch (err) {
      ready = false;
      throw err;
    }
  }
  return loaded;
}

/** What to run once the addon has loaded, before its first use (runtime.ts: the process's thread defaults); at once if it has. */
export function whenLoaded(run: () => void): void {
  onLoad = run;
  if (ready) run();
}

// Every operation on the exports goes to the addon's, loading it (`in`, Object.keys and jest.spyOn see them too).
const exportsOf = () => loadedAddon().binding as unknown as object;

/** The addon's exports, loading it at the first one read. */
export const binding: Binding = new Proxy({} as Binding, {
  get: (_target, key) => Reflect.get(exportsOf(), key),
  set: (_target, key, value) => Reflect.set(exportsOf(), key, value),
  has: (_target, key) => Reflect.has(exportsOf(), key),
  ownKeys: () => Reflect.ownKeys(exportsOf()),
  getOwnPropertyDescriptor: (_target, key) => Reflect.getOwnPropertyDescriptor(exportsOf(), key),
  defineProperty: (_target, key, descriptor) => Reflect.defineProperty(exportsOf(), key, descriptor),
  deleteProperty: (_target, key) => Reflect.deleteProperty(exportsOf(), key),
});
