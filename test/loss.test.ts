import { MemoryBank, PirlLoss, Tensor, nceLoss } from '../lib';

import { unitRows } from './helpers';

/** The loss of docs/PIRL.md written out in float64 JavaScript: an independent reference. */
function reference(
  x: Float32Array, rows: Float32Array, D: number, positives: number[], negatives: number[][], tau: number,
  mode: 'nce' | 'infonce', zGiven: number, N: number,
): { loss: number; grad: Float64Array; zBatch: number } {
  const B = positives.length;
  const K = negatives[0].length;
  const dot = (b: number, r: number) => {
    let s = 0;
    for (let d = 0; d < D; d++) s += x[b * D + d] * rows[r * D + d];
    return s;
  };
  const scores = positives.map((p, b) => [p, ...negatives[b]].map((r) => dot(b, r) / tau));
  const zBatch = (N * scores.flat().reduce((a, t) => a + Math.exp(t), 0)) / (B * (K + 1));
  const z = zGiven > 0 ? zGiven : zBatch;
  const c = (K * z) / N;
  let loss = 0;
  const grad = new Float64Array(B * D);
  scores.forEach((t, b) => {
    const ids = [positives[b], ...negatives[b]];
    let coef: number[];
    if (mode === 'nce') {
      // h = e^t/(e^t + c) = σ(u), u = t − log c; −log h = softplus(−u), −log(1 − h) = softplus(u), kept finite for large |u|.
      const softplus = (a: number) => Math.max(a, 0) + Math.log1p(Math.exp(-Math.abs(a)));
      const u = t.map((v) => v - Math.log(c));
      loss += softplus(-u[0]) + u.slice(1).reduce((a, v) => a + softplus(v), 0);
      coef = u.map((v, k) => 1 / (1 + Math.exp(-v)) - (k === 0 ? 1 : 0));
    } else {
      const m = Math.max(...t);
      const sum = t.reduce((a, v) => a + Math.exp(v - m), 0);
      loss += m + Math.log(sum) - t[0];
      coef = t.map((v, k) => Math.exp(v - m) / sum - (k === 0 ? 1 : 0));
    }
    coef.forEach((w, k) => {
      for (let d = 0; d < D; d++) grad[b * D + d] += (w / tau / B) * rows[ids[k] * D + d];
    });
  });
  return { loss: loss / B, grad, zBatch };
}


const toNumbers = (t: Tensor) => Array.from(t.data() as BigInt64Array, Number);

describe('nceLoss matches a float64 JavaScript reference', () => {
  test.each([
    ['nce', false],
    ['infonce', false],
    ['nce', true],
    ['infonce', true],
  ] as const)('%s, shared negatives: %s', async (mode, shared) => {
    const N = 200, D = 16, B = 6, K = 40, tau = 0.1;
    const bank = await MemoryBank.create({ size: N, dim: D, seed: 9 });
    const rows = bank.rows().data() as Float32Array;
    const x = unitRows(B, D);
    const positives = [3, 50, 199, 0, 7, 7];
    const negatives = await (shared ? bank.sampleShared(K) : bank.sampleNegatives(B, K));
    const negRows = shared
      ? Array.from({ length: B }, () => toNumbers(negatives))
      : Array.from({ length: B }, (_, b) => toNumbers(negatives).slice(b * K, (b + 1) * K));
    for (const z of [undefined, 150]) {
      const r = await nceLoss(Tensor.from(x, [B, D]), bank, positives, negatives, { tau, mode, z });
      const ref = reference(x, rows, D, positives, negRows, tau, mode, z ?? -1, N);
      expect(r.loss).toBeCloseTo(ref.loss, 4);
      expect(Math.abs(r.zBatch - ref.zBatch) / ref.zBatch).toBeLessThan(1e-5);
      const grad = r.grad.data() as Float32Array;
      const scale = Math.max(...Array.from(ref.grad, Math.abs));
      grad.forEach((g, i) => expect(Math.abs(g - ref.grad[i])).toBeLessThan(1e-4 * scale + 1e-6));
    }
  });

  // Late in training a positive is close to its row: s/τ beyond 88.7, where e^{s/τ} is no float32.
  test.each([
    ['shared', 0.01],
    ['shared', 0.005],
    ['per-sample', 0.01],
    ['per-sample', 0.005],
  ] as const)('NCE at a small τ, positives at cosine ~0.99 (%s negatives, τ %s): loss, gradient and Z as in float64', async (layout, tau) => {
    const N = 200, D = 16, B = 6, K = 40;
    const bank = await MemoryBank.create({ size: N, dim: D, seed: 4 });
    const rows = bank.rows().data() as Float32Array;
    const positives = [3, 50, 199, 0, 7, 7];
    const noise = unitRows(B, D);
    const x = new Float32Array(B * D);
    positives.forEach((p, b) => {
      const v = Array.from({ length: D }, (_, d) => rows[p * D + d] + 0.1 * noise[b * D + d]);
      const n = Math.hypot(...v);
      v.forEach((value, d) => (x[b * D + d] = value / n));
    });
    const negatives = await (layout === 'shared' ? bank.sampleShared(K) : bank.sampleNegatives(B, K));
    const negRows = layout === 'shared'
      ? Array.from({ length: B }, () => toNumbers(negatives))
      : Array.from({ length: B }, (_, b) => toNumbers(negatives).slice(b * K, (b + 1) * K));
    // Z estimated by the step (the first), and given (the steps after it: the loss pass estimates it).
    for (const z of [undefined, 1]) {
      const r = await nceLoss(Tensor.from(x, [B, D]), bank, positives, negatives, { tau, mode: 'nce', z });
      const ref = reference(x, rows, D, positives, negRows, tau, 'nce', z ?? -1, N);
      expect(Number.isFinite(ref.zBatch) && ref.zBatch > 1e38).toBe(true); // beyond float32
      expect({ z, loss: r.loss }).toEqual({ z, loss: expect.closeTo(ref.loss, 3) });
      expect({ z, zBatchError: Math.abs(r.zBatch - ref.zBatch) / ref.zBatch < 1e-4 }).toEqual({ z, zBatchError: true });
      const grad = r.grad.data() as Float32Array;
      const scale = Math.max(...Array.from(ref.grad, Math.abs));
      grad.forEach((g, i) => expect(Math.abs(g - ref.grad[i])).toBeLessThan(1e-4 * scale + 1e-6));
    }
  });

  test("InfoNCE's zUsed is the batch's estimate whatever z is given (it uses none); NCE's is the z given", async () => {
    const bank = await MemoryBank.create({ size: 20, dim: 4, seed: 2 });
    const x = Tensor.from(unitRows(2, 4), [2, 4]);
    const negatives = await bank.sampleNegatives(2, 5);
    for (const z of [undefined, 5]) {
      const info = await nceLoss(x, bank, [0, 1], negatives, { mode: 'infonce', z });
      expect({ z, zUsed: info.zUsed }).toEqual({ z, zUsed: info.zBatch });
    }
    expect((await nceLoss(x, bank, [0, 1], negatives, { mode: 'nce', z: 5 })).zUsed).toBe(5);
  });

  test('argument errors name the argument', async () => {
    // Every bank row e2 and every x e1: each score is 0.
    const bank = await MemoryBank.restore({ rows: Tensor.from(new Float32Array(40).map((_, i) => (i % 4 === 1 ? 1 : 0)), [10, 4]), generator: (await MemoryBank.create({ size: 10, dim: 4 })).state().generator });
    const x = Tensor.from(new Float32Array([1, 0, 0, 0, 1, 0, 0, 0]), [2, 4]);
    const neg = await bank.sampleNegatives(2, 3);
    await expect(nceLoss(x, bank, [0, 10], neg)).rejects.toThrow(/positives must be rows in \[0, 10\)/);
    await expect(nceLoss(x, bank, [0, 1], neg, { tau: 0 })).rejects.toThrow(/options.tau must be a positive number, got 0/);
    await expect(nceLoss(x, bank, [0, 1], neg, { tau: 0.001 })).rejects.toThrow("options.tau must be at least 0.0015 with options.mode 'nce' (its Z = N·mean(e^{s/τ}) overflows float64 below; 'infonce' takes any τ > 0), got 0.001");
    // x ⊥ every row scores each 0: InfoNCE's loss is log(K + 1) at any τ.
    expect((await nceLoss(x, bank, [0, 1], neg, { tau: 0.001, mode: 'infonce' })).loss).toBeCloseTo(Math.log(4), 5);
    await expect(nceLoss(x, bank, [0, 1], neg, { mode: 'softmax' as never })).rejects.toThrow(/options.mode must be 'nce' or 'infonce'/);
    await expect(nceLoss(Tensor.zeros([2, 5]), bank, [0, 1], neg)).rejects.toThrow(/bank rows must have x's width 5, got 4/);
    await expect(nceLoss(Tensor.zeros([2, 4], { dtype: 'int64' }), bank, [0, 1], neg)).rejects.toThrow('x must be a float32 or float64 Tensor of embeddings, got "int64"');
    await expect(nceLoss(x, Tensor.zeros([0, 4]), [0, 1], neg)).rejects.toThrow('bank must be a MemoryBank, or a Tensor of N×D rows with N >= 1, got [0, 4]');
    await expect(nceLoss(x, bank, [0], neg)).rejects.toThrow(/positives must have shape \[2\]/);
    // Rows of another length than 1 score other than cosines: of 1000, a NaN loss; of norm 2, another loss, silently.
    await expect(nceLoss(Tensor.from(new Float32Array([2, 0, 0, 0, 1, 0, 0, 0]), [2, 4]), bank, [0, 1], neg)).rejects.toThrow(/^x must hold L2-normalised rows \(PIRL's scores are cosines with the bank's unit rows\): row 0 has norm 2; divide each row by its norm first$/);
    // So must a bank given as a tensor (a MemoryBank's rows are unit by construction): a row of norm 3 scored as a cosine of 3.
    const rows = bank.rows().data() as Float32Array;
    const longRow = rows.slice(), nanRow = rows.slice();
    longRow[7 * 4 + 1] = 3;
    nanRow[2 * 4 + 1] = NaN;
    await expect(nceLoss(x, Tensor.from(longRow, [10, 4]), [0, 1], neg)).rejects.toThrow(/^bank must hold L2-normalised rows \(PIRL's scores are cosines with the bank's unit rows\): row 7 has norm 3; divide each row by its norm first$/);
    await expect(nceLoss(x, Tensor.from(nanRow, [10, 4]), [0, 1], neg)).rejects.toThrow(/^bank must be finite: a NaN or infinite row would poison every loss it is drawn into$/);
    expect((await nceLoss(x, Tensor.from(rows, [10, 4]), [0, 1], neg)).loss).toBeCloseTo((await nceLoss(x, bank, [0, 1], neg)).loss, 6);
  });
});

describe('PirlLoss', () => {
  test('one step: λ-mix of the two terms against the pre-update bank, then the bank moves towards f', async () => {
    const N = 100, D = 8, B = 4;
    const bank = await MemoryBank.create({ size: N, dim: D, seed: 5 });
    const twin = await MemoryBank.create({ size: N, dim: D, seed: 5 });
    const loss = new PirlLoss(bank, { negatives: 32, lambda: 0.25, mode: 'nce', z: 'frozen' });
    const f = unitRows(B, D), g = unitRows(B, D);
    const indices = [1, 2, 3, 2];
    const r = await loss.compute(Tensor.from(f, [B, D]), Tensor.from(g, [B, D]), indices);

    const before = Float32Array.from(twin.rows().data() as Float32Array);
    const negG = await twin.sampleNegatives(B, 32), negF = await twin.sampleNegatives(B, 32);
    const rowsOf = (t: Tensor) => Array.from({ length: B }, (_, b) => toNumbers(t).slice(b * 32, (b + 1) * 32));
    const refG = reference(g, before, D, indices, rowsOf(negG), 0.07, 'nce', -1, N);
    const refF = reference(f, before, D, indices, rowsOf(negF), 0.07, 'nce', -1, N);
    expect(r.lossJigsaw).toBeCloseTo(refG.loss, 4);
    expect(r.lossImage).toBeCloseTo(refF.loss, 4);
    expect(r.loss).toBeCloseTo(0.25 * refG.loss + 0.75 * refF.loss, 4);
    // Frozen Z: each term's first estimate, the reference's zBatch on the same draws.
    expect(Math.abs(r.zImage - refF.zBatch) / refF.zBatch).toBeLessThan(1e-5);
    expect(Math.abs(r.zJigsaw - refG.zBatch) / refG.zBatch).toBeLessThan(1e-5);
    expect(loss.z).toEqual({ image: r.zImage, jigsaw: r.zJigsaw });
    // Each term's gradient weighted by its λ, against the bank before the update.
    for (const [name, got, ref, weight] of [['gradF', r.gradF, refF.grad, 0.75], ['gradG', r.gradG, refG.grad, 0.25]] as const) {
      expect({ name, shape: got.shape }).toEqual({ name, shape: [B, D] });
      const values = got.data() as Float32Array;
      const scale = weight * Math.max(...Array.from(ref, Math.abs));
      expect(scale).toBeGreaterThan(1e-3);
      const worst = Math.max(...Array.from(values, (v, i) => Math.abs(v - weight * ref[i])));
      expect({ name, worst, within: worst <= 1e-4 * scale + 1e-6 }).toEqual({ name, worst, within: true });
    }

    await twin.update(indices, Tensor.from(f, [B, D]), 0.5);
    const a = bank.rows().data() as Float32Array, b = twin.rows().data() as Float32Array;
    a.forEach((v, i) => expect(v).toBeCloseTo(b[i], 6));
  });

  // Long enough (2 × 256 × 32,000 rows of 512 bytes read: 8 GB) that the calls below come while it runs.
  const N = 100_000, D = 128, B = 256;
  const inUse = /^the memory bank is in use by native work in flight \(a training step, a PirlLoss\.compute or a call on the bank\): await it before /;

  test("z: 'ema' moves each term's Z toward its batch's estimate, N·mean(e^{s/τ}): Z ← m·Z + (1 − m)·estimate", async () => {
    // Every bank row r and every f = r (the bank's update leaves r), g = b: each estimate is N·e^{(b·r)/τ} exactly, whatever the negatives.
    const N = 50, D = 4, tau = 0.5;
    const rows = Tensor.from(new Float32Array(N * D).map((_, i) => (i % D === 0 ? 1 : 0)), [N, D]);
    const bank = await MemoryBank.restore({ rows, generator: (await MemoryBank.create({ size: N, dim: D })).state().generator });
    const loss = new PirlLoss(bank, { z: 'ema', zMomentum: 0.75, tau, negatives: 8, mode: 'nce' });
    const twoRows = (v: number[]) => Tensor.from(Float32Array.from([...v, ...v]), [2, D]);
    const f = twoRows([1, 0, 0, 0]);
    const estimate = (cosine: number) => N * Math.exp(cosine / tau);
    const close = (a: number, b: number) => expect(Math.abs(a - b) / b).toBeLessThan(1e-5);
    const first = await loss.compute(f, twoRows([0.6, 0.8, 0, 0]), [0, 1]); // the first step estimates Z itself
    close(first.zImage, estimate(1));
    close(first.zJigsaw, estimate(0.6));
    const second = await loss.compute(f, twoRows([0, 1, 0, 0]), [2, 3]);
    close(second.zImage, estimate(1)); // its estimate again: unmoved
    close(second.zJigsaw, 0.75 * estimate(0.6) + 0.25 * estimate(0));
    expect(loss.z).toEqual({ image: second.zImage, jigsaw: second.zJigsaw });
  });

  test('loss.z never waits for a compute in progress (it held the event loop for the step); setZ is refused during one', async () => {
    const bank = await MemoryBank.create({ size: N, dim: D, seed: 4 });
    const loss = new PirlLoss(bank, { negatives: 32_000, mode: 'nce' });
    const f = Tensor.from(unitRows(B, D), [B, D]), g = Tensor.from(unitRows(B, D), [B, D]);
    const computing = loss.compute(f, g, Array.from({ length: B }, (_, i) => i));
    expect(loss.z).toEqual({ image: -1, jigsaw: -1 }); // as the last settled step left it: none yet (≤ 0)
    expect(() => loss.setZ({ image: 1, jigsaw: 1 })).toThrow(/^loss\.z cannot be set while a compute\(\) is in progress \(it would change the Z that step uses\): await it first$/);
    const done = await computing;
    expect(loss.z).toEqual({ image: done.zImage, jigsaw: done.zJigsaw });
    expect(done.zImage).toBeGreaterThan(0); // NCE's first step estimated it
    loss.setZ({ image: 2, jigsaw: 3 });
    expect(loss.z).toEqual({ image: 2, jigsaw: 3 });
    expect(() => loss.setZ({ image: 2, jigsaw: 3, imageZ: 4 } as never)).toThrow(/^z\.imageZ is not an option; z takes image, jigsaw/);
  });

  test("the bank's own calls are refused while a compute on it is in flight (they ran between its reads: another loss, silently)", async () => {
    const bank = await MemoryBank.create({ size: N, dim: D, seed: 5 });
    const loss = new PirlLoss(bank, { negatives: 32_000 });
    const f = Tensor.from(unitRows(B, D), [B, D]), g = Tensor.from(unitRows(B, D), [B, D]);
    const computing = loss.compute(f, g, Array.from({ length: B }, (_, i) => i + 1));
    await expect(bank.update([5], f.rows(0, 1), 0)).rejects.toThrow(new RegExp(`${inUse.source}bank\\.update\\(\\)$`));
    await expect(bank.get([5])).rejects.toThrow(inUse);
    await expect(bank.sampleNegatives(B, 8)).rejects.toThrow(inUse);
    expect(() => bank.state()).toThrow(new RegExp(`${inUse.source}bank\\.state\\(\\)$`));
    // A second compute ran beside the first on another worker, in either order: the bank's updates raced.
    await expect(new PirlLoss(bank, { negatives: 8 }).compute(f, g, [0])).rejects.toThrow(new RegExp(`${inUse.source}PirlLoss\\.compute\\(\\)$`));
    const rows = Float32Array.from(bank.rows().data() as Float32Array);
    await computing;
    await bank.update([5], f.rows(0, 1), 0); // once it is done
    const first = f.rows(0, 1).data() as Float32Array; // renormalised: equal to float32's rounding
    ((await bank.get([5])).data() as Float32Array).forEach((v, i) => expect(v).toBeCloseTo(first[i], 6));
    expect((bank.rows().data() as Float32Array).subarray((B + 1) * D).every((v, i) => v === rows[(B + 1) * D + i])).toBe(true); // rows the compute did not update
  });

  test('a call on the bank in flight holds it as a compute does: later calls and computes are refused until it is awaited', async () => {
    const bank = await MemoryBank.create({ size: N, dim: D, seed: 6 });
    const all = Array.from({ length: N }, (_, i) => i);
    const fHat = Tensor.from(unitRows(N, D), [N, D]);
    const updating = bank.update(all, fHat, 0);
    await expect(bank.get([0])).rejects.toThrow(new RegExp(`${inUse.source}bank\\.get\\(\\)$`));
    await expect(bank.update([0], fHat.rows(1, 1), 0)).rejects.toThrow(inUse);
    const f = fHat.rows(0, 2);
    await expect(new PirlLoss(bank, { negatives: 8 }).compute(f, f, [0, 1])).rejects.toThrow(inUse);
    const negatives = Tensor.from(new BigInt64Array(8)).rows(0, 8);
    await expect(nceLoss(f, bank, [0, 1], negatives)).rejects.toThrow(new RegExp(`${inUse.source}nceLoss\\(\\)$`)); // it reads rows in place
    await updating;
    const last = fHat.rows(N - 1, 1).data() as Float32Array;
    ((await bank.get([N - 1])).data() as Float32Array).forEach((v, i) => expect(v).toBeCloseTo(last[i], 6));
    expect((await new PirlLoss(bank, { negatives: 8 }).compute(f, f, [0, 1])).loss).toBeGreaterThan(0);
  });

  test('the bank is held until the first call settles, however soon its work ends: a second call made before then is refused every time; one made after, never', async () => {
    // A bank of 100 rows: the work ends within microseconds, before the second call (let go on the work's thread, about
    // half of the second calls were refused).
    const bank = await MemoryBank.create({ size: 100, dim: D, seed: 8 });
    const loss = new PirlLoss(bank, { negatives: 16 });
    const f = Tensor.from(unitRows(4, D), [4, D]);
    const outcomes = async (a: () => Promise<unknown>, b: () => Promise<unknown>) => (await Promise.allSettled([a(), b()])).map((r) => r.status);
    for (let i = 0; i < 20; i++) {
      expect(await outcomes(() => loss.compute(f, f, [0, 1, 2, 3]), () => loss.compute(f, f, [0, 1, 2, 3]))).toEqual(['fulfilled', 'rejected']);
      expect(await outcomes(() => bank.update([0, 1, 2, 3], f, 0.5), () => bank.update([0, 1, 2, 3], f, 0.5))).toEqual(['fulfilled', 'rejected']);
      expect(await outcomes(() => bank.update([0], f.rows(0, 1), 0.5), () => bank.get([0]))).toEqual(['fulfilled', 'rejected']);
      // Awaited, the next call finds the bank free, in the continuation itself.
      await bank.update([0, 1, 2, 3], f, 0.5);
      await loss.compute(f, f, [0, 1, 2, 3]);
    }
  });

  test('reads overlap (get, nceLoss), a write (update, a draw) is refused while they run', async () => {
    const bank = await MemoryBank.create({ size: N, dim: D, seed: 7 });
    const many = Tensor.from(BigInt64Array.from({ length: 1_000_000 }, (_, i) => BigInt(i % N))); // a 512 MB gather
    const [a, b] = [bank.get(many), bank.get([3])]; // two reads at once
    await expect(bank.sampleShared(4)).rejects.toThrow(new RegExp(`${inUse.source}bank\\.sampleShared\\(\\)$`)); // a draw moves the generator
    const x = Tensor.from(unitRows(2, D), [2, D]);
    await expect(bank.update([3], x.rows(0, 1), 0)).rejects.toThrow(inUse);
    expect(bank.state().generator.numel).toBeGreaterThan(0); // reads the generator
    expect([(await a).shape, (await b).shape]).toEqual([[1_000_000, D], [1, D]]);
    const negatives = await bank.sampleShared(4);
    const [scored, row] = await Promise.all([nceLoss(x, bank, [0, 1], negatives), bank.get([0])]); // a read beside a read
    expect([Number.isFinite(scored.loss), row.shape]).toEqual([true, [1, D]]);
  });

  test('options are validated', async () => {
    const bank = await MemoryBank.create({ size: 10, dim: 4 });
    expect(() => new PirlLoss(bank, { lambda: 2 })).toThrow(/options.lambda must be a number in \[0, 1\], got 2/);
    expect(() => new PirlLoss(bank, { negatives: 0 })).toThrow(/options.negatives must be an integer in \[1, 1000000\], got 0/);
    expect(() => new PirlLoss(bank, { z: 'auto' as never })).toThrow(/options.z must be 'frozen' or 'ema', got "auto"/);
    expect(() => new PirlLoss({} as never)).toThrow(/bank must be a MemoryBank/);
    expect(() => new PirlLoss(bank, { mode: 'nce', tau: 0.001 })).toThrow(/options.tau must be at least 0.0015 with options.mode 'nce'/);
    const loss = new PirlLoss(bank);
    await expect(loss.compute(Tensor.from(unitRows(2, 4), [2, 4]), Tensor.from(unitRows(3, 4), [3, 4]), [0, 1])).rejects.toThrow(/f and g must have one shape/);
    // An empty batch is refused before the draw moves the bank's generator (it was refused only after).
    const generator = [...bank.state().generator.data()];
    await expect(loss.compute(Tensor.zeros([0, 4]), Tensor.zeros([0, 4]), [])).rejects.toThrow(/^f and g must hold at least one sample, got \[0, 4\]$/);
    expect([...bank.state().generator.data()]).toEqual(generator);
    const f64 = Tensor.from(new Float64Array(8), [2, 4]);
    await expect(loss.compute(f64, f64, [0, 1])).rejects.toThrow(/^f must be a float32 tensor \(the bank's dtype\), got "float64"$/); // it named the bank
    // A NaN is refused before it reaches the bank (a NaN row made every loss it was drawn into NaN), and the bank stays.
    const before = Array.from(bank.rows().data() as Float32Array);
    const f = unitRows(2, 4);
    f[1] = NaN;
    await expect(loss.compute(Tensor.from(f, [2, 4]), Tensor.from(unitRows(2, 4), [2, 4]), [0, 1])).rejects.toThrow('f must be finite: a NaN or infinite row would enter the memory bank');
    expect(Array.from(bank.rows().data() as Float32Array)).toEqual(before);
    // The scores are cosines only for unit rows: f·m of a row of length 3 was another loss, and the bank took it.
    const long = unitRows(2, 4).map((v, i) => (i < 4 ? 3 * v : v));
    await expect(loss.compute(Tensor.from(long, [2, 4]), Tensor.from(unitRows(2, 4), [2, 4]), [0, 1])).rejects.toThrow(
      /^f must hold L2-normalised rows \(PIRL's scores are cosines with the bank's unit rows\): row 0 has norm 3(\.0*\d*)?; divide each row by its norm first$/);
    const short = unitRows(2, 4).map((v, i) => (i >= 4 ? 0.9 * v : v));
    await expect(loss.compute(Tensor.from(unitRows(2, 4), [2, 4]), Tensor.from(short, [2, 4]), [0, 1])).rejects.toThrow(/^g must hold L2-normalised rows .*: row 1 has norm 0\.9/);
    expect(Array.from(bank.rows().data() as Float32Array)).toEqual(before);
    // Unit rows rounded to bfloat16's precision are unit rows.
    expect((await loss.compute(Tensor.from(unitRows(2, 4).map((v) => Math.round(v * 256) / 256), [2, 4]), Tensor.from(unitRows(2, 4), [2, 4]), [0, 1])).loss).toBeGreaterThan(0);
  });
});
