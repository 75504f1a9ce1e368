import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { MemoryBank, PirlModel, Tensor, ops } from '../lib';

import { unitRows } from './helpers';

function randn(shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = Math.random() - 0.5;
  return Tensor.from(data, shape);
}

/**
 * Runs `work` in rounds, for 250 ms at least, while a 5 ms interval counts its ticks. Work that held the JavaScript
 * thread would let the interval fire once a round at most (between rounds); work off it, every 5 ms.
 */
async function ticksDuring<T>(work: () => Promise<T>): Promise<{ result: T; ticks: number; rounds: number }> {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  try {
    const started = performance.now();
    let result: T, rounds = 0;
    do {
      result = await work();
      rounds++;
    } while (performance.now() - started < 250);
    return { result, ticks, rounds };
  } finally {
    clearInterval(timer);
  }
}

describe('heavy native work runs off the JavaScript thread', () => {
  test('a large matmul lets an interval keep firing, and is right', async () => {
    const n = 2048;
    const a = randn([n, n]);
    const b = randn([n, n]);
    const { result, ticks, rounds } = await ticksDuring(() => Promise.all([0, 1, 2, 3].map(() => ops.matmul(a, b))));
    expect(ticks).toBeGreaterThanOrEqual(rounds + 3);
    const c = result[0].data() as Float32Array;
    const A = a.data() as Float32Array;
    const B = b.data() as Float32Array;
    for (const [i, j] of [[0, 0], [17, 1000], [n - 1, n - 1]]) {
      let ref = 0;
      for (let k = 0; k < n; k++) ref += A[i * n + k] * B[k * n + j];
      expect(c[i * n + j]).toBeCloseTo(ref, 2);
    }
  });

  test('a large conv2d lets an interval keep firing, and has the right shape and values', async () => {
    const input = randn([8, 64, 96, 96]);
    const weight = randn([64, 64, 3, 3]);
    const { result, ticks, rounds } = await ticksDuring(() => Promise.all([0, 1].map(() => ops.conv2d(input, weight, { padding: 1 }))));
    expect(ticks).toBeGreaterThanOrEqual(rounds + 3);
    expect(result[0].shape).toEqual([8, 64, 96, 96]);
    // one output value against a direct sum
    const I = input.data() as Float32Array;
    const W = weight.data() as Float32Array;
    const [o, y, x] = [5, 40, 50];
    let ref = 0;
    for (let c = 0; c < 64; c++) for (let dy = 0; dy < 3; dy++) for (let dx = 0; dx < 3; dx++) {
      ref += I[((0 * 64 + c) * 96 + (y + dy - 1)) * 96 + (x + dx - 1)] * W[((o * 64 + c) * 3 + dy) * 3 + dx];
    }
    expect((result[0].data() as Float32Array)[(o * 96 + y) * 96 + x]).toBeCloseTo(ref, 3);
  });

  test("a memory bank's update of every row (200,000 × 128) lets an interval keep firing, and is right", async () => {
    const N = 200_000, D = 128;
    const bank = await MemoryBank.create({ size: N, dim: D, seed: 1 });
    const rows = unitRows(N, D);
    const indices = Int32Array.from({ length: N }, (_, i) => i);
    const fHat = Tensor.from(rows, [N, D]);
    const { ticks, rounds } = await ticksDuring(() => bank.update(indices, fHat, 0));
    expect(ticks).toBeGreaterThanOrEqual(rounds + 3);
    const got = bank.rows().data() as Float32Array;
    for (const i of [0, 12_345, N - 1]) for (let d = 0; d < D; d++) expect(got[i * D + d]).toBeCloseTo(rows[i * D + d], 6);
  });
});

describe('pirl\'s queued work leaves libuv\'s pool to the rest of the process', () => {
  test('a stat started behind more embeds than the pool has threads finishes before the first embed', async () => {
    const model = await PirlModel.create({ arch: 'resnet18', stem: 'small' });
    const pool = Number(process.env.UV_THREADPOOL_SIZE);
    expect(pool).toBeGreaterThanOrEqual(4);
    const images = randn([16, 3, 64, 64]);
    const order: string[] = [];
    const embeds = Array.from({ length: pool + 2 }, (_, i) => model.embed(images).then(() => order.push(`embed ${i}`)));
    await new Promise((resolve) => setTimeout(resolve, 20));  // every embed queued (each takes far longer)
    await fs.promises.stat(__filename).then(() => order.push('stat'));
    await Promise.all(embeds);
    // Had each queued embed held a pool thread while it waited for the model's thread, the stat would come last.
    expect(order[0]).toBe('stat');
    expect(order.slice(1)).toEqual(Array.from({ length: pool + 2 }, (_, i) => `embed ${i}`));
  });

  test('so does work of no model (products of matrices): a stat started behind more of it than the pool has threads comes first', async () => {
    const pool = Number(process.env.UV_THREADPOOL_SIZE);
    // Products long enough (~0.1 s each here) that a loaded machine's scheduling delays of the stat stay far shorter
    // than `pool` of them; on libuv's pool the stat would wait for 2 * pool to finish (its queue is first in, first out).
    const a = randn([1536, 1536]);
    const order: string[] = [];
    const products = Array.from({ length: 3 * pool }, (_, i) => ops.matmul(a, a).then(() => order.push(`matmul ${i}`)));
    await new Promise((resolve) => setTimeout(resolve, 5));
    await fs.promises.stat(__filename).then(() => order.push('stat'));
    await Promise.all(products);
    expect(order.indexOf('stat')).toBeLessThan(pool);
  });
});

describe('a worker thread that uses pirl ends alone', () => {
  // A pool (piscina, a server's workers) terminates workers at any time: the process must live on (it aborted).
  test.each([
    'while its native work is in flight',
    'while a model\'s work is in flight',
    'while it loads pirl',
  ])('terminated %s, the process lives on', (when) => {
    const work = when.includes('model')
      ? `PirlModel.create({ arch: 'resnet18', stem: 'small' }).then((model) => {
           const x = Tensor.from(new Float32Array(8 * 3 * 64 * 64).fill(0.5), [8, 3, 64, 64]);
           Promise.all(Array.from({ length: 8 }, () => model.embed(x)));
           parentPort.postMessage('inflight');
         });`
      : `const a = Tensor.from(new Float32Array(1024 * 1024).fill(0.5), [1024, 1024]);
         Promise.all(Array.from({ length: 8 }, () => ops.matmul(a, a)));
         parentPort.postMessage('inflight');`;
    const worker = `
      const { parentPort } = require('worker_threads');
      parentPort.postMessage('starting');
      const { PirlModel, Tensor, ops } = require(${JSON.stringify(path.join(__dirname, '..'))});
      ${work}`;
    const script = `
      const { Worker } = require('worker_threads');
      const worker = new Worker(${JSON.stringify(worker)}, { eval: true });
      // Loading pirl (libtorch) takes ~0.5 s: 100 ms after it starts, the worker is inside the addon's init.
      const [phase, after] = ${JSON.stringify(when.includes('flight') ? ['inflight', 0] : ['starting', 100])};
      worker.on('message', (m) => { if (m === phase) setTimeout(() => worker.terminate().then(() => console.log('survived')), after); });`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect({ status: r.status, stdout: r.stdout.trim(), stderr: r.stderr }).toEqual({ status: 0, stdout: 'survived', stderr: '' });
  });
});

describe('a process that exits while a model works', () => {
  // process.exit() runs no clean-up: the model's thread ran on into libtorch's static destructors (SIGSEGV).
  test.each(['process.exit(3)', 'throw new Error("uncaught")'])('with %s, exits with its code and no crash', (exit) => {
    const script = `
      const { PirlModel, Tensor } = require(${JSON.stringify(path.join(__dirname, '..'))});
      PirlModel.create({ arch: 'resnet18', stem: 'small' }).then((model) => {
        const x = Tensor.from(new Float32Array(32 * 3 * 64 * 64).fill(0.5), [32, 3, 64, 64]);
        for (let i = 0; i < 8; i++) model.embed(x);
        setTimeout(() => { ${exit}; }, 100);
      });`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect({ status: r.status, signal: r.signal }).toEqual({ status: exit.startsWith('process') ? 3 : 1, signal: null });
    expect(r.stderr).toMatch(exit.startsWith('process') ? /^$/ : /Error: uncaught/);
  });
});

describe('a process that exits during one long native call', () => {
  test('waits for the part of it in progress, not for all of it (an embed of many batches)', async () => {
    // The same embed twice, the second cut by the exit: had the exit waited for all of it, it would wait about the
    // whole first; it waits for one batch of 4 of its 512 (the exit itself, freeing the input, takes ~0.3 s).
    const script = `
      const { PirlModel, Tensor } = require(${JSON.stringify(path.join(__dirname, '..'))});
      PirlModel.create({ arch: 'resnet18', stem: 'small', width: 0.25 }).then(async (model) => {
        const images = Tensor.from(new Float32Array(2048 * 3 * 48 * 48).fill(0.5), [2048, 3, 48, 48]);
        const started = Date.now();
        await model.embed(images, { batchSize: 4 });
        console.log('whole ' + (Date.now() - started));
        model.embed(images, { batchSize: 4 });
        setTimeout(() => { console.log('exiting ' + Date.now()); process.exit(3); }, 50);
      });`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    const exited = new Promise<{ code: number | null; at: number }>((resolve) => child.on('exit', (code) => resolve({ code, at: Date.now() })));
    await new Promise((resolve) => child.on('close', resolve)); // its output read to the end
    const { code, at } = await exited;
    expect({ code, stderr }).toEqual({ code: 3, stderr: '' });
    const said = Object.fromEntries(stdout.trim().split('\n').map((line) => line.split(' ')));
    const [whole, exiting] = [Number(said.whole), Number(said.exiting)];
    expect(whole).toBeGreaterThan(0);
    expect(at - exiting).toBeLessThan(whole / 3);
  });
});

describe('libtorch errors reach JavaScript cleanly', () => {
  test('a native check (a c10::Error, thrown on a worker thread) rejects with its message, no C++ backtrace, and the caller stack', async () => {
    const model = await PirlModel.create({ arch: 'resnet18', stem: 'small' });
    const images = randn([2, 3, 8, 8]);
    (images.data() as Float32Array)[3 * 8 * 8] = Number.NaN;
    const err = (await model.embed(images).catch((e: Error) => e)) as Error;
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toBe('images must be finite: image 1 holds NaN or infinity (1 image(s) of 2)');
    expect(err.message).not.toMatch(/Exception raised from|frame #/);
    expect(err.stack).toContain('async.test.ts');
    model.dispose();
  });

  test('invalid arguments reject with errors naming them', async () => {
    await expect(ops.matmul('x' as never, Tensor.zeros([1]))).rejects.toThrow(/^a must be a Tensor, got "x"$/);
    const fake = Object.create(Tensor.prototype) as Tensor; // passes instanceof, holds nothing
    await expect(ops.matmul(Tensor.zeros([1]), fake)).rejects.toThrow(/^b is an object of Tensor's prototype without a native tensor: give a Tensor that pirl made/);
    await expect(ops.conv2d(Tensor.zeros([1, 1, 4, 4]), Tensor.zeros([1, 1, 3, 3]), { stride: 0 })).rejects.toThrow(
      /^options\.stride\[0\] must be an integer in \[1, 2147483647\], got 0$/,
    );
    await expect(ops.conv2d(Tensor.zeros([1, 1, 4, 4]), Tensor.zeros([1, 1, 3, 3]), { padding: [1, -1] })).rejects.toMatchObject({ argument: 'options.padding[1]' });
    const disposed = Tensor.zeros([2, 2]);
    disposed.dispose();
    await expect(ops.matmul(disposed, disposed)).rejects.toThrow(/a was disposed/);
  });
});
