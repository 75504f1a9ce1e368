// Tensor: a typed handle over a native at::Tensor; its data() is a typed-array view of native memory.
import { constants } from 'buffer';

import { binding, type TensorHandle } from './binding';
import { checkDevice, type Device } from './config';
import { checkArrayOf, checkInteger, checkOneOf, checkOptions, describe, nativeCall, rangeError, typeError } from './errors';

export type DType = 'float32' | 'float64' | 'int32' | 'int64' | 'uint8';
export type TypedArray = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;
export type { Device };

export const DTYPES: readonly DType[] = ['float32', 'float64', 'int32', 'int64', 'uint8'];

const ARRAY_DTYPES: ReadonlyArray<[new (...args: never[]) => TypedArray, DType]> = [
  [Float32Array, 'float32'],
  [Float64Array, 'float64'],
  [Int32Array, 'int32'],
  [BigInt64Array, 'int64'],
  [Uint8Array, 'uint8'], // Node Buffers are Uint8Arrays
];

const BYTES_PER_ELEMENT: Record<DType, number> = { float32: 4, float64: 8, int32: 4, int64: 8, uint8: 1 };

function dtypeOfArray(data: unknown): DType {
  for (const [ctor, dtype] of ARRAY_DTYPES) {
    if (data instanceof ctor) return dtype;
  }
  throw typeError('data', 'a Float32Array, Float64Array, Int32Array, BigInt64Array, Uint8Array or Buffer', data);
}

/**
 * The most elements a tensor may have: a PiB of float64, beyond any memory, and short of the int64 byte count that
 * libtorch overflows with a message naming no argument ("Storage size calculation overflowed").
 */
export const MAX_ELEMENTS = 2 ** 50;

export function checkShape(arg: string, shape: unknown): number[] {
  const dims = checkArrayOf(arg, shape, (a, d) => checkInteger(a, d, 0));
  const count = dims.reduce((a, b) => a * b, 1);
  if (count > MAX_ELEMENTS) throw rangeError(arg, 'dimensions whose product is at most 2^50', dims);
  return dims;
}


// zeros' and empty's arguments, checked.
function factoryArguments(shape: readonly number[], options: { dtype?: DType; device?: Device }): [number[], DType, Device] {
  checkOptions('options', options, ['dtype', 'device']);
  return [
    checkShape('shape', shape),
    checkOneOf('options.dtype', options.dtype ?? 'float32', DTYPES),
    checkDevice('options.device', options.device ?? 'cpu'),
  ];
}

export class Tensor {
  /** @internal The native handle; shared with other pirl classes, not part of the public API. */
  readonly handle: TensorHandle;

  /** Wraps a native handle, which only pirl makes: use Tensor.from / Tensor.zeros. (Kept in the typings: without it a class reads as taking no arguments.) */
  constructor(handle: TensorHandle) {
    if (!(handle instanceof binding.TensorHandle)) throw typeError('handle', 'a native tensor handle', handle);
    this.handle = handle;
  }

  /**
   * A tensor of `data`'s values. Memory JavaScript owns is copied (it may be detached or transferred —
   * postMessage, structuredClone — while native work reads it); a view of native memory (another
   * tensor's data()) is shared, writes on either side seen by the other.
   * The dtype follows the array type; `shape` defaults to `[data.length]`.
   */
  static from(data: TypedArray, shape?: readonly number[]): Tensor {
    const dtype = dtypeOfArray(data);
    const dims = shape === undefined ? [data.length] : checkShape('shape', shape);
    const numel = dims.reduce((a, b) => a * b, 1);
    if (numel !== data.length) {
      throw rangeError('data', `${numel} values for shape [${dims.join(', ')}]`, data);
    }
    // Node-API cannot see into a SharedArrayBuffer; its values are copied like any JavaScript memory.
    const plain = typeof SharedArrayBuffer !== 'undefined' && data.buffer instanceof SharedArrayBuffer ? data.slice() : data;
    return new Tensor(binding.fromArray(plain, dims, dtype));
  }

  static zeros(shape: readonly number[], options: { dtype?: DType; device?: Device } = {}): Tensor {
    return new Tensor(binding.zeros(...factoryArguments(shape, options)));
  }

  /** A tensor whose values are whatever its memory held: to be filled in place (through data()), without a first pass of zeros. */
  static empty(shape: readonly number[], options: { dtype?: DType; device?: Device } = {}): Tensor {
    return new Tensor(binding.empty(...factoryArguments(shape, options)));
  }

  get shape(): number[] {
    return this.handle.shape();
  }

  get dtype(): DType {
    return this.handle.dtype();
  }

  get device(): Device {
    return this.handle.device() as Device;
  }

  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** Bytes of its values. */
  get nbytes(): number {
    return this.numel * BYTES_PER_ELEMENT[this.dtype];
  }

  get disposed(): boolean {
    return this.handle.disposed();
  }

  /**
   * A typed array over the tensor's own memory (a view, not a copy) for a dense CPU tensor; a copy
   * for any other tensor (CUDA, strided).
   */
  data(): TypedArray {
    const bytes = this.nbytes;
    // Past it the runtime cannot make the array (Node 20: 4 GiB), and failed without an error it could report.
    if (bytes > constants.MAX_LENGTH) {
      throw new RangeError(`tensor.data() of a ${this.dtype} tensor of shape [${this.shape.join(', ')}] would be ${(bytes / 2 ** 30).toFixed(1)} GiB: ` +
        `more than one typed array holds here (${(constants.MAX_LENGTH / 2 ** 30).toFixed(1)} GiB); read it in parts with tensor.rows(start, count)`);
    }
    return this.handle.data();
  }

  /**
   * Rows [start, start + count) along the first dimension: a view sharing this tensor's memory (writes
   * through its data() reach this tensor), not a copy.
   */
  rows(start: number, count: number): Tensor {
    const n = this.shape[0] as number | undefined; // none for a scalar: refused by the native call
    const first = checkInteger('start', start, 0, n);
    const rowCount = checkInteger('count', count, 0);
    if (n !== undefined && first + rowCount > n) throw rangeError('count', `at most ${n - first} (rows [${first}, ${first + rowCount}) must lie within the tensor's ${n} rows)`, rowCount);
    return new Tensor(this.handle.rows(first, rowCount));
  }

  /** The tensor on `device` (CPU ↔ CUDA), made off the JavaScript thread: a copy on another device, itself (its memory) on its own, as PyTorch's `to`. */
  async to(device: Device): Promise<Tensor> {
    const target = checkDevice('device', device);
    return new Tensor(await nativeCall(() => this.handle.to(target)));
  }

  /** Releases the native memory now instead of at garbage collection; later use throws. */
  dispose(): void {
    this.handle.dispose();
  }

  toString(): string {
    return this.disposed ? 'Tensor(disposed)' : `Tensor(${this.dtype}, [${this.shape.join(', ')}], ${this.device})`;
  }
}

/** Drops these handles' memory now (a run's batch, a checkpoint's copies) rather than at a garbage collection. */
export function disposeAll(tensors: Iterable<Tensor>): void {
  for (const t of tensors) t.dispose();
}

/** A 1-D int64 tensor of row numbers or labels (a copy: int64 has no number-typed array). */
export function int64Tensor(values: ArrayLike<number>): Tensor {
  return Tensor.from(BigInt64Array.from(values as ArrayLike<number>, (v) => BigInt(v)));
}

/** The native handle of a Tensor argument; errors name `arg`. */
export function handleOf(arg: string, value: unknown): TensorHandle {
  if (!(value instanceof Tensor)) throw typeError(arg, 'a Tensor', value);
  // Object.create(Tensor.prototype) passes instanceof but holds no tensor: its use failed in JavaScript's words.
  if (!(value.handle instanceof binding.TensorHandle)) {
    throw new TypeError(`${arg} is an object of Tensor's prototype without a native tensor: give a Tensor that pirl made (Tensor.from, Tensor.zeros, an op's result)`);
  }
  if (value.disposed) throw new TypeError(`${arg} was disposed (received ${describe(value)})`);
  return value.handle;
}
