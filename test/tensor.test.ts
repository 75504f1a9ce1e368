import * as v8 from 'v8';
import * as vm from 'vm';

import { Tensor, isArgumentError, ops } from '../lib';

describe('Tensor.from copies JavaScript memory and shares native memory', () => {
  const cases: Array<[string, () => Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array, unknown, unknown]> = [
    ['float32', () => new Float32Array([1, 2, 3, 4, 5, 6]), 7.5, -2.25],
    ['float64', () => new Float64Array([1, 2, 3, 4, 5, 6]), 1e300, -3.5],
    ['int32', () => new Int32Array([1, 2, 3, 4, 5, 6]), -7, 2 ** 30],
    ['int64', () => new BigInt64Array([1n, 2n, 3n, 4n, 5n, 6n]), 2n ** 62n, -5n],
    ['uint8', () => new Uint8Array([1, 2, 3, 4, 5, 6]), 255, 9],
  ];

  test.each(cases)('%s: the values are copied; data() and Tensor.from(data()) share the native memory', (dtype, make, a, b) => {
    const source = make();
    const t = Tensor.from(source, [2, 3]);
    expect(t.dtype).toBe(dtype);
    expect(t.shape).toEqual([2, 3]);
    expect(t.device).toBe('cpu');
    const view = t.data();
    expect(view.constructor).toBe(source.constructor);
    expect([...view]).toEqual([...source]);
    (source as unknown as unknown[])[4] = a;
    expect(view[4]).not.toBe(a); // JavaScript's array was copied
    const again = Tensor.from(view.subarray(3), [3]); // a view of native memory is shared
    (view as unknown as unknown[])[4] = b;
    expect(again.data()[1]).toBe(b);
    expect(t.data()[4]).toBe(b);
  });

  test('a Node Buffer is a uint8 tensor of its bytes, pooled offset included', () => {
    const buf = Buffer.from([10, 20, 30, 40]); // small Buffers live at an offset in a shared pool
    const t = Tensor.from(buf, [2, 2]);
    expect(t.dtype).toBe('uint8');
    expect([...t.data()]).toEqual([10, 20, 30, 40]);
  });

  test('a typed array over a SharedArrayBuffer is copied like any other (it was refused as "Invalid argument")', () => {
    const shared = new Float32Array(new SharedArrayBuffer(16)).fill(2.5);
    expect([...Tensor.from(shared, [2, 2]).data()]).toEqual([2.5, 2.5, 2.5, 2.5]);
  });

  test('a view into the middle of an ArrayBuffer gives its own elements', () => {
    const whole = new Float32Array(16).map((_, i) => i);
    const t = Tensor.from(whole.subarray(4, 10), [6]);
    expect([...t.data()]).toEqual([4, 5, 6, 7, 8, 9]);
  });

  // The memory a native op reads must not go away under it: JavaScript may transfer or detach its
  // own buffers at any time (each case crashed the process when tensors borrowed that memory).
  test('buffers transferred while native work reads them: no crash, the right result', () => {
    const script = `
      const { Worker } = require('worker_threads');
      const pirl = require(${JSON.stringify(require('path').join(__dirname, '..', 'dist'))});
      (async () => {
        for (let i = 0; i < 20; i++) {
          const a = new Float32Array(512 * 512).fill(1);
          const t = pirl.Tensor.from(a, [512, 512]);
          const pending = pirl.ops.matmul(t, t);
          structuredClone(a.buffer, { transfer: [a.buffer] });
          global.gc();
          const r = await pending;
          if (r.data()[0] !== 512) throw new Error('matmul read ' + r.data()[0]);
        }
        const worker = new Worker('require("worker_threads").parentPort.on("message", () => {})', { eval: true });
        const b = new Float32Array(512 * 512).fill(2);
        const u = pirl.Tensor.from(b, [512, 512]);
        const pending = pirl.ops.matmul(u, u);
        worker.postMessage(b.buffer, [b.buffer]);
        await worker.terminate();
        global.gc();
        if ((await pending).data()[0] !== 2048) throw new Error('wrong result after postMessage');
        console.log('ok');
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const r = require('child_process').spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' });
    expect(r.signal).toBeNull();
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('ok');
  });

  test('shape defaults to the array length; empty tensors work', () => {
    expect(Tensor.from(new Float32Array(5)).shape).toEqual([5]);
    const empty = Tensor.from(new Float32Array(0), [0, 3]);
    expect(empty.shape).toEqual([0, 3]);
    expect(empty.data().length).toBe(0);
  });

  test('the values stay valid after the JavaScript array is dropped, collected and its memory reused', () => {
    const values = Array.from({ length: 1 << 16 }, (_, i) => i % 7);
    const t = Tensor.from(Float64Array.from(values));
    // Jest runs without --expose-gc: V8's flag set now, its gc() taken from a fresh context.
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    gc();
    const reuse = Array.from({ length: 8 }, () => new Float64Array(1 << 16).fill(-1)); // likely over the freed memory
    expect(reuse[7][0]).toBe(-1);
    expect(Array.from(t.data() as Float64Array).every((v, i) => v === values[i])).toBe(true);
  });
});

describe('Tensor.zeros and data() over native memory', () => {
  test('data() is a view: writes through it reach the tensor', async () => {
    const t = Tensor.zeros([2, 2]);
    const view = t.data() as Float32Array;
    view.set([1, 2, 3, 4]);
    expect([...t.data()]).toEqual([1, 2, 3, 4]);
    const copy = await t.to('cpu'); // same-device `to` returns the same storage
    expect([...copy.data()]).toEqual([1, 2, 3, 4]);
  });

  test('rows(start, count) is a view of those rows: writes through its data() reach the tensor', () => {
    const t = Tensor.from(new Float32Array([0, 1, 2, 3, 4, 5]), [3, 2]);
    const middle = t.rows(1, 2);
    expect(middle.shape).toEqual([2, 2]);
    expect([...middle.data()]).toEqual([2, 3, 4, 5]);
    (middle.data() as Float32Array)[0] = 9;
    expect([...t.data()]).toEqual([0, 1, 9, 3, 4, 5]);
    expect(t.rows(3, 0).shape).toEqual([0, 2]);
    // Argument errors, naming the argument (isArgumentError).
    const refusal = (start: number, count: number) => {
      try {
        t.rows(start, count);
      } catch (err) {
        return isArgumentError(err) ? [err.name, err.argument, err.message] : err;
      }
      return 'accepted';
    };
    expect(refusal(2, 2)).toEqual(['RangeError', 'count', "count must be at most 1 (rows [2, 4) must lie within the tensor's 3 rows), got 2"]);
    expect(refusal(4, 0)).toEqual(['RangeError', 'start', 'start must be an integer in [0, 3], got 4']);
    expect(refusal(-1, 1)).toEqual(['RangeError', 'start', 'start must be an integer in [0, 3], got -1']);
    expect(() => Tensor.from(new Float32Array([1]), []).rows(0, 1)).toThrow(/tensor has no rows: it is a scalar/);
  });

  test.each(['float32', 'float64', 'int32', 'int64', 'uint8'] as const)('zeros of %s', (dtype) => {
    const t = Tensor.zeros([3], { dtype });
    expect(t.dtype).toBe(dtype);
    expect(t.data().length).toBe(3);
    expect([...t.data()].every((v) => v === 0 || v === 0n)).toBe(true);
  });

  test('empty: the shape and dtype asked, filled in place through data(); its arguments checked as zeros\' are', async () => {
    const t = Tensor.empty([2, 3], { dtype: 'uint8' });
    expect([t.shape, t.dtype, t.device]).toEqual([[2, 3], 'uint8', 'cpu']);
    (t.data() as Uint8Array).set([1, 2, 3, 4, 5, 6]);
    expect([...t.rows(1, 1).data()]).toEqual([4, 5, 6]);
    expect(Tensor.empty([0, 4]).shape).toEqual([0, 4]);
    expect(() => Tensor.empty([2, -1])).toThrow(/shape\[1\] must be an integer >= 0, got -1/);
    expect(() => Tensor.empty([2], { dtype: 'float16' as never })).toThrow(/options.dtype must be one of 'float32', 'float64', 'int32', 'int64', 'uint8', got "float16"/);
    expect(() => Tensor.empty([2], { device: 'gpu' as never })).toThrow(/options.device must be 'cpu', 'cuda' or 'cuda:N', got "gpu"/);
    expect(() => Tensor.empty([2], { devise: 'cpu' } as never)).toThrow('options.devise is not an option; options takes dtype, device');
    // A misspelt option of the other calls too: conv2d's padding was 0 silently.
    const padded = { stride: 1, paddding: 1 };
    await expect(ops.conv2d(Tensor.zeros([1, 1, 4, 4]), Tensor.zeros([1, 1, 3, 3]), padded as never)).rejects.toThrow('options.paddding is not an option; options takes bias, stride, padding');
    expect(() => Tensor.zeros([2], null as never)).toThrow(/^options must be an object, got null$/);
  });
});

describe('bad input is refused with errors naming the argument', () => {
  test("ops.matmul and ops.conv2d: shapes, dtypes and devices that do not fit, named by argument (libtorch's messages named none)", async () => {
    const f32 = (shape: number[]) => Tensor.zeros(shape);
    const refused = async (work: Promise<unknown>, Class: typeof Error, message: string) => {
      const err = await work.then(() => null, (e: Error) => e);
      expect(err).toBeInstanceOf(Class);
      expect(err!.message).toBe(message);
    };
    await refused(ops.matmul(f32([2, 3]), f32([4, 2])), RangeError, "b must be a Tensor of 3 rows to meet a's 3 columns (a is [2, 3]), got [4, 2]");
    await refused(ops.matmul(f32([2, 3]), f32([4])), RangeError, "b must be a Tensor of 3 values to meet a's 3 columns (a is [2, 3]), got [4]");
    await refused(ops.matmul(f32([5, 2, 3]), f32([4, 3, 2])), RangeError, "b must be a Tensor whose batch dimensions broadcast with a's [5] (each equal, or 1), got [4, 3, 2]");
    await refused(ops.matmul(f32([]), f32([2, 3])), RangeError, 'a must be a Tensor of at least 1 dimension, got []');
    await refused(ops.matmul(f32([3]), f32([2, 4])), RangeError, "b must be a Tensor of 3 rows to meet a's 3 values (a is [3]), got [2, 4]");
    await refused(ops.matmul(f32([2, 3]), Tensor.zeros([3, 2], { dtype: 'float64' })), TypeError, 'b must be a float32 Tensor like a, got "float64"');
    const input = f32([2, 3, 5, 5]);
    await refused(ops.conv2d(input, f32([4, 2, 3, 3])), RangeError, 'weight must be O×3×kH×kW: input has 3 channels (input is [2, 3, 5, 5]), got [4, 2, 3, 3]');
    await refused(ops.conv2d(input, f32([4, 3, 7, 7]), { padding: [1, 0] }), RangeError,
      "weight must be a kernel no larger than the padded input's 7×5 (input is [2, 3, 5, 5], options.padding [1, 0]), got [4, 3, 7, 7]");
    await refused(ops.conv2d(input, f32([4, 3, 3, 3]), { bias: f32([3]) }), RangeError, 'options.bias must be 4 values, one per output channel of weight [4, 3, 3, 3], got [3]');
    await refused(ops.conv2d(input, f32([4, 3, 3])), RangeError, 'weight must be O×C×kH×kW, got [4, 3, 3]');
    await refused(ops.conv2d(f32([5, 5]), f32([4, 3, 3, 3])), RangeError, 'input must be N×C×H×W (or one image, C×H×W), got [5, 5]');
    await refused(ops.conv2d(Tensor.zeros([2, 3, 5, 5], { dtype: 'int64' }), f32([4, 3, 3, 3])), TypeError, 'input must be a float32 or float64 Tensor, got "int64"');
    // Results checked as a Tensor's size, and kernels of at least a pixel (libtorch's words: storage overflow, a negative size).
    await refused(ops.matmul(f32([2 ** 40, 0]), f32([0, 2 ** 40])), RangeError,
      'b must be a Tensor whose product with a [1099511627776, 0] holds at most 2^50 values (it would be [1099511627776, 1099511627776]), got [0, 1099511627776]');
    await refused(ops.conv2d(f32([1, 1, 4, 4]), f32([1, 1, 2, 2]), { padding: 2 ** 30 }), RangeError,
      'options.padding must be a padding whose output of input [1, 1, 4, 4] holds at most 2^50 values (it would be [1, 1, 2147483651, 2147483651]), got [1073741824, 1073741824]');
    await refused(ops.conv2d(f32([1, 1, 4, 4]), f32([1, 1, 0, 0])), RangeError, 'weight must be O×C×kH×kW with a kernel of at least 1×1, got [1, 1, 0, 0]');
    // Without padding the weight's output channels are named (tensors of no channels: nothing allocated).
    await refused(ops.conv2d(f32([2 ** 20, 0, 2 ** 10, 2 ** 10]), f32([2 ** 20, 0, 1, 1])), RangeError,
      'weight must be a weight whose output of input [1048576, 0, 1024, 1024] holds at most 2^50 values (it would be [1048576, 1048576, 1024, 1024]), got [1048576, 0, 1, 1]');
    // A batch dimension of 0 broadcasts to 0: an empty product, not a refusal.
    expect((await ops.matmul(f32([0, 2 ** 25, 0]), f32([1, 0, 2 ** 26]))).shape).toEqual([0, 2 ** 25, 2 ** 26]);
    // What fits still runs: broadcast batches, a padded kernel as large as the padded input, one image.
    expect((await ops.matmul(f32([5, 2, 3]), f32([1, 3, 4]))).shape).toEqual([5, 2, 4]);
    expect((await ops.conv2d(input, f32([4, 3, 7, 7]), { padding: 1, bias: f32([4]) })).shape).toEqual([2, 4, 1, 1]);
    expect((await ops.conv2d(f32([3, 5, 5]), f32([4, 3, 3, 3]))).shape).toEqual([4, 3, 3]);
  });

  test('unsupported typed array', () => {
    expect(() => Tensor.from(new Int16Array(4) as never)).toThrow(TypeError);
    expect(() => Tensor.from(new Int16Array(4) as never)).toThrow(/data must be a Float32Array.*got Int16Array\(4\)/);
    expect(() => Tensor.from([1, 2, 3] as never)).toThrow(/data must be .* got \[1, 2, 3\]/);
  });

  test('shape that does not match the data', () => {
    expect(() => Tensor.from(new Float32Array(6), [4, 2])).toThrow(RangeError);
    expect(() => Tensor.from(new Float32Array(6), [4, 2])).toThrow(/^data must be 8 values for shape \[4, 2\], got Float32Array\(6\)$/);
    expect(() => Tensor.from(new Float32Array(6), [2, 2])).toThrow(/4 values for shape \[2, 2\]/);
    // An array whose memory was transferred away reads as empty: said as detached, not as 0 values.
    const moved = new Float32Array(4);
    structuredClone(moved.buffer, { transfer: [moved.buffer] });
    expect(() => Tensor.from(moved, [4])).toThrow(/^data must be 4 values for shape \[4\], got Float32Array whose memory was detached \(transferred away\)$/);
    expect(() => Tensor.from(new Float32Array(0), [4])).toThrow(/got Float32Array\(0\)$/);
  });

  test('malformed shapes', () => {
    expect(() => Tensor.from(new Float32Array(6), [2, -3] as never)).toThrow(RangeError);
    expect(() => Tensor.from(new Float32Array(6), [2, -3])).toThrow(/shape\[1\] must be an integer >= 0, got -3/);
    expect(() => Tensor.from(new Float32Array(6), [2, 1.5])).toThrow(TypeError);
    expect(() => Tensor.from(new Float32Array(6), '6' as never)).toThrow(/shape must be an array/);
    expect(() => Tensor.zeros([2, Number.NaN])).toThrow(/shape\[1\] must be an integer >= 0, got NaN/);
    expect(() => Tensor.zeros([0, 2 ** 62])).toThrow(/^shape\[1\] must be an integer >= 0 within ±\(2\^53 − 1\) \(JavaScript's exact integers\), got 4611686018427388000$/);
    // Past any memory: named here, not by libtorch's "Storage size calculation overflowed".
    expect(() => Tensor.zeros([2 ** 30, 2 ** 30, 2 ** 30], { dtype: 'float64' })).toThrow(/^shape must be dimensions whose product is at most 2\^50, got \[1073741824, 1073741824, 1073741824\]$/);
  });

  test('bad dtype and device', () => {
    expect(() => Tensor.zeros([2], { dtype: 'float16' as never })).toThrow(/options.dtype must be one of 'float32', 'float64', 'int32', 'int64', 'uint8', got "float16"/);
    expect(() => Tensor.zeros([2], { device: 'gpu' as never })).toThrow(/options.device must be 'cpu', 'cuda' or 'cuda:N', got "gpu"/);
  });

  test('a detached buffer is refused at creation', () => {
    const source = new Float32Array(4);
    structuredClone(source.buffer, { transfer: [source.buffer] });
    expect(() => Tensor.from(source, [0])).toThrow(/detached/);
  });

  test('a buffer detached after creation leaves the tensor whole (it holds a copy)', () => {
    const source = new Float32Array([1, 2, 3]);
    const t = Tensor.from(source);
    structuredClone(source.buffer, { transfer: [source.buffer] });
    expect([...t.data()]).toEqual([1, 2, 3]);
  });

  test('a disposed tensor throws on use', () => {
    const t = Tensor.zeros([4]);
    t.dispose();
    expect(t.disposed).toBe(true);
    expect(() => t.data()).toThrow(/tensor was disposed/);
    expect(String(t)).toBe('Tensor(disposed)');
  });
});
