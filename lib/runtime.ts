// What pirl runs on (libtorch, CUDA, BLAS, threads) and the intra-op thread setting.
import * as os from 'os';

import { binding, loadedAddon, whenLoaded } from './binding';
import { checkDevice, isLoopback, type Device } from './config';
import { checkBoolean, checkInteger, checkOptions, rangeError } from './errors';
import { boolean, resolve, type Options, type Resolved } from './schema';

export interface BuildInfo {
  pirlVersion: string;
  /** source: where scripts/libtorch.js found it (LIBTORCH, python3 torch, system, ...); tag: the prebuild folder it matches. */
  libtorch: { version: string; library: string; cxx11Abi: boolean; source: string; tag: string | null };
  cuda: { compiled: boolean; available: boolean; deviceCount: number };
  /** Data-parallel training: Gloo (ranks on the CPU) and NCCL (ranks on GPUs) compiled in. */
  distributed: { gloo: boolean; nccl: boolean };
  blas: { kind: 'openblas' | 'mkl' | 'reference' | 'other' | 'none'; library: string; warning: string | null };
  threads: { intraOp: number; interOp: number; backend: string };
  napiVersion: { addon: number; node: number };
  addonPath: string;
  /** 'build': compiled on this machine (build/Release); 'prebuild': shipped in prebuilds/. */
  addonKind: 'build' | 'prebuild';
}

const REFERENCE_BLAS_WARNING =
  'libtorch is running on the reference (netlib) BLAS: matrix products are ~30x slower ' +
  '(sgemm measured 4.5 vs 127 GFLOP/s with OpenBLAS). Fix: apt-get install libopenblas0-pthread';

/** This package's version (package.json). */
// eslint-disable-next-line @typescript-eslint/no-require-imports
export const PIRL_VERSION = (require('../package.json') as { version: string }).version;

export function buildInfo(): BuildInfo {
  const native = binding.buildInfo();
  const addon = loadedAddon();
  return {
    pirlVersion: PIRL_VERSION,
    libtorch: {
      version: native.libtorchVersion,
      library: native.libtorchLibrary,
      cxx11Abi: native.cxx11Abi,
      source: addon.libtorch.source,
      tag: addon.libtorch.tag,
    },
    cuda: { compiled: native.cudaCompiled, available: native.cudaAvailable, deviceCount: native.cudaDeviceCount },
    distributed: { gloo: native.gloo, nccl: native.nccl },
    blas: { ...native.blas, warning: native.blas.kind === 'reference' ? REFERENCE_BLAS_WARNING : null },
    threads: { intraOp: native.numThreads, interOp: native.numInteropThreads, backend: native.parallelBackend },
    napiVersion: { addon: native.napiVersion, node: Number(process.versions.napi) },
    addonPath: addon.path,
    addonKind: addon.kind,
  };
}

/** GPU memory of pirl's tensors on a CUDA device, in bytes. */
export interface CudaMemory {
  allocated: number;
  /** The most allocated at once since the last reset. */
  peakAllocated: number;
  reserved: number;
  peakReserved: number;
}

/**
 * The CUDA caching allocator's counters for `device` ('cuda' or 'cuda:N'); `resetPeak` starts a new
 * peak after reading. Where pirl has no CUDA, a TypeError saying how to get it (as any CUDA device given).
 */
export function cudaMemory(device: Device = 'cuda', options: { resetPeak?: boolean } = {}): CudaMemory {
  const target = checkDevice('device', device);
  if (target === 'cpu') throw rangeError('device', "'cuda' or 'cuda:N'", device);
  const { resetPeak } = checkOptions('options', options, ['resetPeak']);
  // checkDevice refused a build without CUDA, the only one whose counters are null.
  return binding.cudaMemory(target === 'cuda' ? 0 : Number(target.slice(5)), checkBoolean('options.resetPeak', resetPeak ?? false))!;
}

let oversubscribedWarned = 0;

/**
 * Sets the intra-op threads of every native computation, OpenBLAS's matrix products too (default: the available cores). More than this
 * process's share of the cores is warned of, once per count: OpenMP's threads then wait for each other
 * (100 threads on 2 cores trained ~20× slower than 2).
 */
export function setNumThreads(n: number): void {
  setThreads(n, '--threads, setNumThreads');
}

// setNumThreads, with where `n` came from (said if it oversubscribes the cores); `asDefault`: only where this process
// has no count yet (the count is the process's: a Worker loading pirl leaves one set on another thread as it is).
function setThreads(n: number, from: string, asDefault = false): void {
  checkInteger('n', n, 1, binding.buildInfo().maxThreads);
  if (asDefault) {
    if (!binding.setDefaultNumThreads(n)) return;
  } else {
    binding.setNumThreads(n);
  }
  const ranks = localRanks(process.env);
  const share = coreShare(ranks);
  // Of a data-parallel run's ranks, started alike, rank 0 alone says it.
  if (n > share && n !== oversubscribedWarned && !(Number(process.env.RANK) > 0)) {
    oversubscribedWarned = n;
    const of = ranks > 1 ? `this process's share of the ${os.availableParallelism()} cores it may use (${ranks} ranks on this host)` : `the ${os.availableParallelism()} cores this process may use`;
    process.emitWarning(`${n} threads, more than ${of}: they wait for each other and run slower than ${share} (${from})`, { code: 'PIRL_THREADS_OVERSUBSCRIBED' });
  }
}

// The ranks of a data-parallel run on this host: as torchrun and pirl train --nproc say (LOCAL_WORLD_SIZE); else all
// of them where they meet on loopback or through a file (a launch by hand, or one that does not say); else 1.
function localRanks(env: NodeJS.ProcessEnv): number {
  const ranks = Number(env.LOCAL_WORLD_SIZE || NaN);
  if (Number.isSafeInteger(ranks) && ranks >= 1) return ranks;
  const world = Number(env.WORLD_SIZE || NaN);
  return Number.isSafeInteger(world) && world > 1 && (!!env.PIRL_STORE_FILE || isLoopback(env.MASTER_ADDR ?? '')) ? world : 1;
}

// The cores this process may use, shared by the ranks on this host.
function coreShare(ranks: number): number {
  return Math.max(1, Math.floor(os.availableParallelism() / ranks));
}

export function getNumThreads(): number {
  return binding.getNumThreads();
}

/**
 * @internal `work` run on the threads of every rank on this host, which wait meanwhile (rank 0's kNN pass at an
 * epoch's end, while the others wait at the epoch's vote); then this process's own count again. Alone, as it is.
 */
export async function withHostThreads<T>(work: () => Promise<T>): Promise<T> {
  const ranks = localRanks(process.env);
  if (ranks === 1) return work();
  const own = binding.getNumThreads();
  binding.setNumThreads(Math.min(own * ranks, binding.buildInfo().maxThreads)); // the host's, not this rank's: not warned of
  try {
    return await work();
  } finally {
    binding.setNumThreads(own);
  }
}

const TF32 = { convolutions: boolean(), matmul: boolean() };

/**
 * TF32 (float32 with a 10-bit mantissa, ~5e-4 relative rounding) for float32 convolutions and matrix
 * products on Ampere and later GPUs, process-wide. Defaults as PyTorch's: convolutions yes, matrix
 * products no. Both off: float32 arithmetic as on the CPU. No effect on the CPU.
 */
export type Tf32 = Resolved<typeof TF32>;

/** Sets TF32 for what `options` names; the rest stays as it is. */
export function setTf32(options: Options<typeof TF32>): void {
  const tf32 = resolve(TF32, binding.getTf32(), options, 'options');
  binding.setTf32(tf32.convolutions, tf32.matmul);
}

export function getTf32(): Tf32 {
  return binding.getTf32();
}

// cuBLAS workspaces PyTorch's deterministic mode accepts (its alertCuBLASConfigNotDeterministic).
const DETERMINISTIC_CUBLAS = [':4096:8', ':16:8'];

/**
 * Deterministic GPU kernels, process-wide (PyTorch's use_deterministic_algorithms and cudnn.deterministic): on,
 * a run on a GPU repeats itself bit for bit — a second run of the same seed, or a resume, as on the CPU — at some
 * cost in speed: cuDNN's benchmark mode is off and its deterministic convolutions are used, and an op that has no
 * deterministic kernel throws. CUBLAS_WORKSPACE_CONFIG is set to ':4096:8' where unset (cuBLAS reads it as this
 * process first uses it: turn this on before any GPU work, or the next product on the GPU fails, saying so). Off (the
 * default; off again, benchmark mode is as it was), a trainer on a GPU times cuDNN's algorithms and keeps the fastest.
 * The CPU's kernels are deterministic either way.
 */
export function setDeterministic(on: boolean): void {
  checkBoolean('on', on);
  const cublas = process.env.CUBLAS_WORKSPACE_CONFIG;
  if (on && binding.buildInfo().cudaAvailable) {
    if (cublas === undefined || cublas === '') process.env.CUBLAS_WORKSPACE_CONFIG = DETERMINISTIC_CUBLAS[0];
    else if (!DETERMINISTIC_CUBLAS.includes(cublas)) {
      throw rangeError('CUBLAS_WORKSPACE_CONFIG', `${DETERMINISTIC_CUBLAS.join(' or ')} for deterministic cuBLAS (or unset, and pirl sets it)`, cublas);
    }
  }
  binding.setDeterministic(on);
}

export function getDeterministic(): boolean {
  return binding.getDeterministic();
}

/**
 * The default thread count: $PIRL_NUM_THREADS, else $OMP_NUM_THREADS (as PyTorch; torchrun sets it for
 * its workers), else the cores this process may use shared by the ranks on this host ($LOCAL_WORLD_SIZE; where unset,
 * every rank of a run that meets on loopback).
 */
export function defaultNumThreads(env: NodeJS.ProcessEnv = process.env): number {
  const max = binding.buildInfo().maxThreads;
  const fromEnv = env.PIRL_NUM_THREADS;
  if (fromEnv !== undefined && fromEnv !== '') {
    const n = Number(fromEnv);
    if (!Number.isSafeInteger(n) || n < 1 || n > max) throw rangeError('PIRL_NUM_THREADS', `an integer in [1, ${max}]`, fromEnv);
    return n;
  }
  // OpenMP's own variable, read as OpenMP does (a list's first level; above what libtorch takes, its most);
  // not pirl's to refuse: one it cannot read is left aside.
  const omp = /^\s*(\d+)\s*(,|$)/.exec(env.OMP_NUM_THREADS ?? '');
  if (omp && Number(omp[1]) >= 1) return Math.min(Number(omp[1]), max);
  return Math.min(coreShare(localRanks(env)), max);
}

let initialised = false;

/**
 * Applies the defaults once per process: threads (left as they are where another Worker thread's pirl set them), and the
 * warning about a slow BLAS. Runs when the addon loads, whichever use loads it first; calling it loads the addon.
 */
export function initRuntime(): void {
  if (initialised) return;
  initialised = true; // the calls below load the addon, which runs this again: done once
  try {
    const env = ['PIRL_NUM_THREADS', 'OMP_NUM_THREADS'].find((name) => (process.env[name] ?? '') !== '');
    setThreads(defaultNumThreads(), env ?? 'the default', true);
  } catch (err) {
    initialised = false; // a bad PIRL_NUM_THREADS: said again at each use, never trained past with libtorch's defaults
    throw err;
  }
  if (binding.buildInfo().blas.kind === 'reference') {
    process.emitWarning(REFERENCE_BLAS_WARNING, { code: 'PIRL_REFERENCE_BLAS' });
  }
}

whenLoaded(initRuntime);
