// The NCE loss against the memory bank and the PIRL objective (shared/PIRL.md, "Loss").
import { binding, type PirlLossHandle } from './binding';
import { checkInteger, checkOneOf, nativeCall, rangeError, typeError } from './errors';
import { MemoryBank, indexTensor } from './memoryBank';
import { Tensor, handleOf } from './tensor';

export type NceMode = 'nce' | 'infonce';

export interface NceLossOptions {
  /** Temperature τ (0.07). */
  tau?: number;
  /** 'nce': the paper's/VISSL's NCE; 'infonce': softmax cross-entropy, the positive first. */
  mode?: NceMode;
  /** NCE partition function Z; leave out on the first step to estimate it as N·mean(e^{s/τ}). */
  z?: number;
}

export interface NceLossResult {
  loss: number;
  /** d loss / d x. */
  grad: Tensor;
  zUsed: number;
  /** This batch's estimate N·mean(e^{s/τ}). */
  zBatch: number;
}

function checkTau(arg: string, tau: unknown): number {
  if (typeof tau !== 'number' || !(tau > 0) || !Number.isFinite(tau)) throw rangeError(arg, 'a positive number', tau);
  return tau;
}

const checkMode = (arg: string, mode: unknown): NceMode => checkOneOf(arg, mode, ['nce', 'infonce']);

function checkUnit(arg: string, value: unknown, closedTop: boolean): number {
  if (typeof value !== 'number' || !(value >= 0 && (closedTop ? value <= 1 : value < 1))) {
    throw rangeError(arg, `a number in [0, 1${closedTop ? ']' : ')'}`, value);
  }
  return value;
}

/**
 * The fused NCE loss of embeddings `x` (B×D) against bank rows: `positives` (B) and `negatives`
 * (B×K per sample, or K shared by the batch). Bank rows are read in place: memory O(B·D).
 */
export async function nceLoss(
  x: Tensor,
  bank: MemoryBank | Tensor,
  positives: Tensor | readonly number[],
  negatives: Tensor,
  options: NceLossOptions = {},
): Promise<NceLossResult> {
  const hx = handleOf('x', x);
  const rows = bank instanceof MemoryBank ? bank.rows() : bank;
  const hb = handleOf('bank', rows);
  const hp = indexTensor('positives', positives).handle;
  const hn = indexTensor('negatives', negatives).handle;
  const tau = checkTau('options.tau', options.tau ?? 0.07);
  const mode = checkMode('options.mode', options.mode ?? 'nce');
  const z = options.z ?? -1;
  if (typeof z !== 'number' || !Number.isFinite(z)) throw rangeError('options.z', 'a finite number', z);
  const r = await nativeCall(() => binding.nceLoss(hx, hb, hp, hn, tau, mode, z));
  return { loss: r.loss, grad: new Tensor(r.grad), zUsed: r.zUsed, zBatch: r.zBatch };
}

export interface PirlLossOptions {
  /** λ: weight of the jigsaw term (0.5). */
  lambda?: number;
  tau?: number;
  /** K negatives per sample and term (paper 32,000; ablations 4,096). */
  negatives?: number;
  /** μ of the bank update (0.5). */
  momentum?: number;
  mode?: NceMode;
  /** 'frozen': Z estimated on the first step then fixed (NPID, VISSL); 'ema': follows each batch. */
  z?: 'frozen' | 'ema';
  zMomentum?: number;
  /** One set of K negatives for the whole batch (a matrix product: much faster). */
  sharedNegatives?: boolean;
  /** Never draw a sample's own row as its negative. */
  excludePositive?: boolean;
}

export interface PirlLossResult {
  loss: number;
  lossImage: number;
  lossJigsaw: number;
  /** d loss / d f and d loss / d g. */
  gradF: Tensor;
  gradG: Tensor;
  zImage: number;
  zJigsaw: number;
}

/** Every PIRL loss option, checked, with the paper's defaults. */
export function resolvePirlLossOptions(options: PirlLossOptions = {}): Required<PirlLossOptions> {
  if (typeof options !== 'object' || options === null) throw typeError('options', 'an object', options);
  const z = checkOneOf('options.z', options.z ?? 'frozen', ['frozen', 'ema'] as const);
  for (const key of ['sharedNegatives', 'excludePositive'] as const) {
    if (options[key] !== undefined && typeof options[key] !== 'boolean') throw typeError(`options.${key}`, 'a boolean', options[key]);
  }
  return {
    lambda: checkUnit('options.lambda', options.lambda ?? 0.5, true),
    tau: checkTau('options.tau', options.tau ?? 0.07),
    negatives: checkInteger('options.negatives', options.negatives ?? 4096, 1),
    momentum: checkUnit('options.momentum', options.momentum ?? 0.5, false),
    mode: checkMode('options.mode', options.mode ?? 'nce'),
    z,
    zMomentum: checkUnit('options.zMomentum', options.zMomentum ?? 0.99, false),
    sharedNegatives: options.sharedNegatives ?? false,
    excludePositive: options.excludePositive ?? false,
  };
}

/**
 * L = λ·L_NCE(m_y, g(v_It)) + (1−λ)·L_NCE(m_y, f(v_I)): both terms against the bank as it was before
 * the step, fresh negatives per term, then m_y updated with f — one native call per step.
 */
export class PirlLoss {
  readonly bank: MemoryBank;
  readonly options: Required<PirlLossOptions>;
  private readonly handle: PirlLossHandle;

  constructor(bank: MemoryBank, options: PirlLossOptions = {}) {
    if (!(bank instanceof MemoryBank)) throw typeError('bank', 'a MemoryBank', bank);
    this.bank = bank;
    this.options = resolvePirlLossOptions(options);
    this.handle = new binding.PirlLossHandle(this.options);
  }

  /** One step: f, g are B×D L2-normalised embeddings; indices their B bank rows. */
  async compute(f: Tensor, g: Tensor, indices: Tensor | readonly number[]): Promise<PirlLossResult> {
    const hf = handleOf('f', f);
    const hg = handleOf('g', g);
    const hi = indexTensor('indices', indices).handle;
    const r = await nativeCall(() => this.handle.compute(this.bank.handle, hf, hg, hi));
    return { ...r, gradF: new Tensor(r.gradF), gradG: new Tensor(r.gradG) };
  }

  /** Z of each term (≤ 0 until its first step). */
  get z(): { image: number; jigsaw: number } {
    return this.handle.z();
  }

  /** Restores Z from a checkpoint. */
  setZ(z: { image: number; jigsaw: number }): void {
    if (typeof z !== 'object' || z === null || !Number.isFinite(z.image) || !Number.isFinite(z.jigsaw)) {
      throw typeError('z', '{ image, jigsaw } finite numbers', z);
    }
    this.handle.setZ(z.image, z.jigsaw);
  }
}
