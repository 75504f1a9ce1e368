// PIRL's memory bank: one unit row m_y per training image (docs/PIRL.md, "Memory bank").
import { binding, type MemoryBankHandle } from './binding';
import { placementDevice, resolveBankMomentum, resolveMemoryBankOptions, type Device, type MemoryBankOptions, type Placement } from './config';
import { checkInteger, checkOptions, nativeCall, rangeError, typeError } from './errors';
import { MAX_ELEMENTS, Tensor, handleOf, int64Tensor } from './tensor';

/** What a checkpoint stores to restore a bank exactly, sampling generator included. */
export interface MemoryBankState {
  rows: Tensor;
  generator: Tensor;
}

/** Bank rows (or any row numbers): an int64 Tensor, an array of integers or an Int32Array. */
export type Indices = Tensor | readonly number[] | Int32Array;

/** Row indices as an int64 Tensor: from a Tensor (int64), an array of integers or an Int32Array. */
export function indexTensor(arg: string, value: unknown): Tensor {
  if (value instanceof Tensor) {
    handleOf(arg, value); // a disposed one named as such, not by its dtype's getter
    if (value.dtype !== 'int64') throw typeError(arg, 'an int64 Tensor', value.dtype);
    return value;
  }
  if (Array.isArray(value) || value instanceof Int32Array) {
    const list = Array.from(value as ArrayLike<number>, (v, i) => checkInteger(`${arg}[${i}]`, v, 0));
    return int64Tensor(list);
  }
  throw typeError(arg, 'an int64 Tensor, an array of row numbers or an Int32Array', value);
}

export class MemoryBank {
  /** @internal */
  readonly handle: MemoryBankHandle;

  /** Wraps a native handle, which only pirl makes: use MemoryBank.create or MemoryBank.restore. */
  constructor(handle: MemoryBankHandle) {
    if (!(handle instanceof binding.MemoryBankHandle)) throw typeError('handle', 'a native memory bank handle', handle);
    this.handle = handle;
  }

  /** N×D rows, uniform(±1/sqrt(D/3)) then L2-normalised; made off the JavaScript thread. */
  static async create(options: MemoryBankOptions): Promise<MemoryBank> {
    const { size, dim, seed, device } = resolveMemoryBankOptions(options);
    return new MemoryBank(await nativeCall(() => binding.createMemoryBank(size, dim, seed, device)));
  }

  /** A bank exactly as `state()` saw it, on `placement.device` (default 'cpu'); its rows are copied, off the JavaScript thread. */
  static async restore(state: MemoryBankState, placement: Placement = {}): Promise<MemoryBank> {
    return MemoryBank.restoreNamed(state, placement, ['state.rows', 'state.generator']);
  }

  /** @internal restore, its errors calling the two tensors by `names` (a checkpoint's: 'bank.rows', 'bank.generator'). */
  static async restoreNamed(state: MemoryBankState, placement: Placement, names: readonly [string, string]): Promise<MemoryBank> {
    checkOptions('state', state, ['rows', 'generator']); // a misspelt key is said, not ignored
    const device = placementDevice(placement);
    const [rows, generator] = [handleOf(names[0], state.rows), handleOf(names[1], state.generator)];
    return new MemoryBank(await nativeCall(() => binding.restoreMemoryBank(rows, generator, device, ...names)));
  }

  /** Where the rows live. */
  get device(): Device {
    return this.rows().device;
  }

  get size(): number {
    return this.handle.size();
  }

  get dim(): number {
    return this.handle.dim();
  }

  /** All N×D rows, as a view (no copy) that follows later updates. */
  rows(): Tensor {
    return new Tensor(this.handle.rows());
  }

  /**
   * A copy of the rows at `indices` (e.g. for a kNN monitor). This and the calls below run off the JavaScript thread;
   * a read (get) is refused while a write or a step is in flight on the bank, a write (update, a draw) while anything
   * is (README "Memory bank and loss"): await each before the next, so that they apply in the order written.
   */
  async get(indices: Indices): Promise<Tensor> {
    const index = indexTensor('indices', indices).handle;
    return new Tensor(await nativeCall(() => this.handle.get(index)));
  }

  /**
   * m_y ← normalize(μ·m_y + (1−μ)·f̂_y). An index repeated in one batch is updated once, with the
   * mean of its rows of f̂, so the batch order changes it only by float rounding.
   */
  async update(indices: Indices, fHat: Tensor, momentum?: number): Promise<void> {
    const mu = resolveBankMomentum(momentum);
    const [index, rows] = [indexTensor('indices', indices).handle, handleOf('fHat', fHat)];
    await nativeCall(() => this.handle.update(index, rows, mu));
  }

  /** batch×k rows drawn uniformly with replacement; optionally never a sample's own positive. */
  async sampleNegatives(batch: number, k: number, options: { excludePositives?: Indices } = {}): Promise<Tensor> {
    const b = checkInteger('batch', batch, 1);
    const count = checkInteger('k', k, 1);
    if (b * count > MAX_ELEMENTS) throw rangeError('k', `at most ${Math.floor(MAX_ELEMENTS / b)} for batch ${b} (B×K indices, at most 2^50)`, count);
    const { excludePositives } = checkOptions('options', options, ['excludePositives']);
    const exclude = excludePositives === undefined ? null : indexTensor('options.excludePositives', excludePositives);
    return new Tensor(await nativeCall(() => this.handle.sampleNegatives(b, count, exclude && exclude.handle)));
  }

  /** k rows shared by the whole batch. */
  async sampleShared(k: number): Promise<Tensor> {
    const count = checkInteger('k', k, 1);
    return new Tensor(await nativeCall(() => this.handle.sampleShared(count)));
  }

  /**
   * Lets go of the rows now rather than when the bank is collected: every later use is an error ('the memory
   * bank was disposed'); a Trainer training with it (and views from rows()) keep them until done.
   */
  dispose(): void {
    this.handle.dispose();
  }

  get disposed(): boolean {
    return this.handle.disposed();
  }

  /** Rows (a view) and the sampling generator's state, for a checkpoint. */
  state(): MemoryBankState {
    return { rows: this.rows(), generator: new Tensor(this.handle.generatorState()) };
  }
}
