// The NCE loss against the memory bank and the PIRL objective (docs/PIRL.md, "Loss").
import { binding, type PirlLossHandle } from './binding';
import { checkNumber, checkOptions, nativeCall, rangeError, typeError } from './errors';
import { resolveLossOptions, resolveNceOptions, type NceLossOptions, type PirlLossOptions, type ResolvedLossOptions } from './config';
import { MemoryBank, indexTensor, type Indices } from './memoryBank';
import { Tensor, handleOf } from './tensor';

export interface NceLossResult {
  loss: number;
  /** d loss / d x. */
  grad: Tensor;
  zUsed: number;
  /** This batch's estimate N·mean(e^{s/τ}). */
  zBatch: number;
}

/**
 * The fused NCE loss of embeddings `x` (B×D) against bank rows: `positives` (B) and `negatives`
 * (B×K per sample, or K shared by the batch). Bank rows are read in place: memory O(B·D).
 */
export async function nceLoss(
  x: Tensor,
  bank: MemoryBank | Tensor,
  positives: Indices,
  negatives: Indices,
  options: NceLossOptions = {},
): Promise<NceLossResult> {
  const hx = handleOf('x', x);
  const rows = bank instanceof MemoryBank ? bank.rows() : bank;
  const hb = handleOf('bank', rows);
  // Named here: libtorch's words were of gradients (an int64 x) and of argmax (a bank of no rows).
  if (x.dtype !== 'float32' && x.dtype !== 'float64') throw typeError('x', 'a float32 or float64 Tensor of embeddings', x.dtype);
  if (rows.shape.length !== 2 || rows.shape[0] === 0) throw rangeError('bank', 'a MemoryBank, or a Tensor of N×D rows with N >= 1', rows.shape);
  const hp = indexTensor('positives', positives).handle;
  const hn = indexTensor('negatives', negatives).handle;
  const { tau, mode, z } = resolveNceOptions(options);
  const held = bank instanceof MemoryBank ? bank.handle : null; // read in place: no write on it meanwhile
  const r = await nativeCall(() => binding.nceLoss(hx, hb, hp, hn, tau, mode, z, held));
  return { loss: r.loss, grad: new Tensor(r.grad), zUsed: r.zUsed, zBatch: r.zBatch };
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

/**
 * L = λ·L_NCE(m_y, g(v_It)) + (1−λ)·L_NCE(m_y, f(v_I)): both terms against the bank as it was before
 * the step, fresh negatives per term, then m_y updated with f — one native call per step.
 */
export class PirlLoss {
  readonly bank: MemoryBank;
  readonly options: Readonly<ResolvedLossOptions>;
  private readonly handle: PirlLossHandle;

  constructor(bank: MemoryBank, options: PirlLossOptions = {}) {
    if (!(bank instanceof MemoryBank)) throw typeError('bank', 'a MemoryBank', bank);
    this.bank = bank;
    this.options = Object.freeze(resolveLossOptions(options));
    this.handle = new binding.PirlLossHandle(this.options);
  }

  /** One step: f, g are B×D L2-normalised embeddings; indices their B bank rows. */
  async compute(f: Tensor, g: Tensor, indices: Indices): Promise<PirlLossResult> {
    const hf = handleOf('f', f);
    const hg = handleOf('g', g);
    // Named here: the native check compares the bank with f, and so named the bank (a disposed bank is said there).
    const dtype = this.bank.disposed ? null : this.bank.rows().dtype;
    for (const [name, t] of [['f', f], ['g', g]] as const) if (dtype !== null && t.dtype !== dtype) throw typeError(name, `a ${dtype} tensor (the bank's dtype)`, t.dtype);
    const hi = indexTensor('indices', indices).handle;
    const r = await nativeCall(() => this.handle.compute(this.bank.handle, hf, hg, hi));
    return { ...r, gradF: new Tensor(r.gradF), gradG: new Tensor(r.gradG) };
  }

  /** Z of each term (≤ 0 until its first step), as the last compute (or setZ) left it: a compute in progress is not waited for. */
  get z(): { image: number; jigsaw: number } {
    return this.handle.z();
  }

  /** Restores Z from a checkpoint; refused while a compute() is in progress (it would change the Z that step uses). */
  setZ(z: { image: number; jigsaw: number }): void {
    const { image, jigsaw } = checkOptions('z', z, ['image', 'jigsaw']);
    this.handle.setZ(checkNumber('z.image', image), checkNumber('z.jigsaw', jigsaw));
  }
}
