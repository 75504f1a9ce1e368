import { MemoryBank, PirlLoss, Tensor } from '../lib';

import { unitRows } from './helpers';


describe('MemoryBank', () => {
  test('create: N unit rows of width D, seeded', async () => {
    const a = await MemoryBank.create({ size: 300, dim: 8, seed: 4 });
    const b = await MemoryBank.create({ size: 300, dim: 8, seed: 4 });
    expect(a.size).toBe(300);
    expect(a.dim).toBe(8);
    const rows = a.rows().data() as Float32Array;
    for (let i = 0; i < 300; i++) expect(Math.hypot(...rows.subarray(i * 8, i * 8 + 8))).toBeCloseTo(1, 5);
    expect([...b.rows().data()]).toEqual(Array.from(rows));
  });

  test('update: momentum then normalise; a repeated index gets the mean of its rows', async () => {
    const bank = await MemoryBank.create({ size: 10, dim: 4, seed: 1 });
    const before = Float32Array.from(bank.rows().data() as Float32Array);
    const f = unitRows(3, 4);
    await bank.update([7, 2, 7], Tensor.from(f, [3, 4]), 0.5);
    const after = bank.rows().data() as Float32Array;
    const expect7 = [0, 1, 2, 3].map((j) => 0.5 * before[28 + j] + 0.5 * (f[j] + f[8 + j]) / 2);
    const n = Math.hypot(...expect7);
    for (let j = 0; j < 4; j++) expect(after[28 + j]).toBeCloseTo(expect7[j] / n, 6);
    expect(after[0]).toBe(before[0]);
  });

  test('rows() is a view that follows updates', async () => {
    const bank = await MemoryBank.create({ size: 5, dim: 4, seed: 2 });
    const view = bank.rows().data() as Float32Array;
    await bank.update([0], Tensor.from(unitRows(1, 4), [1, 4]));
    expect(Array.from(view.subarray(0, 4))).toEqual(Array.from(((await bank.get([0])).data() as Float32Array)));
  });

  test('dispose() lets go of the rows: later use is an error naming the bank; views taken before keep theirs', async () => {
    const bank = await MemoryBank.create({ size: 6, dim: 4, seed: 3 });
    const view = bank.rows();
    const before = Array.from(view.data() as Float32Array);
    bank.dispose();
    expect(bank.disposed).toBe(true);
    expect(() => bank.rows()).toThrow(/^the memory bank was disposed$/);
    expect(() => bank.size).toThrow(/^the memory bank was disposed$/);
    await expect(bank.update([0], Tensor.from(unitRows(1, 4), [1, 4]))).rejects.toThrow(/^the memory bank was disposed$/);
    const f = Tensor.from(unitRows(1, 4), [1, 4]);
    await expect(new PirlLoss(bank, { negatives: 2 }).compute(f, f, [0])).rejects.toThrow(/^bank was disposed$/);
    expect(Array.from(view.data() as Float32Array)).toEqual(before);
  });

  test('sampling is seeded, in range, can exclude positives, and restores from state', async () => {
    const bank = await MemoryBank.create({ size: 20, dim: 4, seed: 3 });
    const state = bank.state();
    const restored = await MemoryBank.restore(state);
    const a = await bank.sampleNegatives(6, 500, { excludePositives: [0, 1, 2, 3, 4, 5] });
    const b = await restored.sampleNegatives(6, 500, { excludePositives: [0, 1, 2, 3, 4, 5] });
    expect(a.shape).toEqual([6, 500]);
    expect([...a.data()]).toEqual([...b.data()]);
    const values = a.data() as BigInt64Array;
    for (let i = 0; i < 6; i++) {
      for (let k = 0; k < 500; k++) {
        const v = values[i * 500 + k];
        expect(v).not.toBe(BigInt(i));
        expect(v >= 0n && v < 20n).toBe(true);
      }
    }
    // Shared negatives: seeded the same way, in range, spread over the bank.
    const shared = await bank.sampleShared(400), again = await restored.sampleShared(400);
    expect(shared.shape).toEqual([400]);
    expect([...shared.data()]).toEqual([...again.data()]);
    const rows = Array.from(shared.data() as BigInt64Array, Number);
    expect(rows.every((r) => Number.isInteger(r) && r >= 0 && r < 20)).toBe(true);
    expect(new Set(rows).size).toBe(20); // 400 draws of 20 rows miss one with probability ~20·0.95^400 ≈ 2e-8
  });

  test('bad input: clear errors, never a read past the end', async () => {
    const bank = await MemoryBank.create({ size: 10, dim: 4 });
    await expect(bank.get([10])).rejects.toThrow(RangeError);
    await expect(bank.get([10])).rejects.toThrow(/indices must be rows in \[0, 10\), got values in \[10, 10\]/);
    await expect(bank.get([-1])).rejects.toThrow(/indices\[0\] must be an integer >= 0, got -1/);
    await expect(bank.get(Tensor.from(new Float32Array([1])) as never)).rejects.toThrow(/indices must be an int64 Tensor, got "float32"/);
    await expect(bank.update([1], Tensor.zeros([1, 3]))).rejects.toThrow(/fHat must be 1×4/);
    await expect(bank.update([1], Tensor.from(new Float32Array([1, 0, 0, 0]), [1, 4]), 1)).rejects.toThrow(/momentum must be a number in \[0, 1\), got 1/);
    await expect(bank.sampleNegatives(0, 3)).rejects.toThrow(/batch must be an integer >= 1, got 0/);
    await expect(bank.sampleNegatives(1, 5, { excludePositives: [10] })).rejects.toThrow(/^options\.excludePositives must be rows in \[0, 10\), got values in \[10, 10\]$/);
    // f̂ is a unit row: a zero one with momentum 0 made a bank row of zeros.
    await expect(bank.update([1], Tensor.zeros([1, 4]), 0)).rejects.toThrow(/^fHat must hold L2-normalised rows .*: row 0 has norm 0; divide each row by its norm first$/);
    // B×K past any memory: named, not libtorch's "Storage size calculation overflowed".
    await expect(bank.sampleNegatives(2 ** 40, 2 ** 40)).rejects.toMatchObject({ argument: 'k', message: expect.stringMatching(/^k must be at most 1024 for batch 1099511627776/) });
    const gone = Tensor.from(new BigInt64Array([1n]));
    gone.dispose();
    await expect(bank.get(gone)).rejects.toThrow(/^indices was disposed/);
    await expect(bank.sampleNegatives(2, 3, { exclude: [0, 1] } as never)).rejects.toThrow('options.exclude is not an option; options takes excludePositives');
    await expect(MemoryBank.restore(bank.state(), { devcie: 'cuda' } as never)).rejects.toThrow('placement.devcie is not an option; placement takes device');
    await expect(MemoryBank.create({ size: 0 })).rejects.toThrow(/options.size must be an integer in \[1, 2147483647\], got 0/);
    await expect(MemoryBank.create({ size: 5, device: 'tpu' as never })).rejects.toThrow(/options.device/);
    // NaN never enters a bank: not by an update, not by a restore.
    const nan = Tensor.from(new Float32Array([1, Number.NaN, 0, 0]), [1, 4]);
    const before = Array.from(bank.rows().data() as Float32Array);
    await expect(bank.update([1], nan)).rejects.toThrow(/fHat must be finite/);
    expect(Array.from(bank.rows().data() as Float32Array)).toEqual(before);
    const { generator } = bank.state();
    await expect(MemoryBank.restore({ rows: Tensor.from(new Float32Array([0, Number.POSITIVE_INFINITY, 0, 1]), [1, 4]), generator })).rejects.toThrow(/^state\.rows must be finite/);
    // Rows that are not unit rows (a file edited, another model's features) gave losses of no meaning: refused as update refuses them.
    await expect(MemoryBank.restore({ rows: Tensor.from(new Float32Array([0, 0, 0, 1, 0, 3, 0, 0]), [2, 4]), generator })).rejects.toThrow(/^state\.rows must hold L2-normalised rows \(PIRL's scores are cosines with the bank's unit rows\): row 1 has norm 3; divide each row by its norm first$/);
    await expect(MemoryBank.restore({ rows: Tensor.zeros([3, 0]), generator })).rejects.toThrow(/^state\.rows must be N×D with N, D >= 1, got \[3, 0\]$/);
    await expect(MemoryBank.restore({ ...bank.state(), seed: 3 } as never)).rejects.toThrow(/^state\.seed is not an option; state takes rows, generator$/);
    await expect(bank.update([1], Tensor.from(new Int32Array([0, 0, 0, 1]), [1, 4]))).rejects.toThrow(/^fHat must be a float tensor, got int32$/);
    const rows = Tensor.from(new Float32Array([0, 0, 0, 1]), [1, 4]);
    await expect(MemoryBank.restore({ rows, generator: Tensor.zeros([4], { dtype: 'uint8' }) })).rejects.toThrow(/^state\.generator must be the \d+ bytes \(uint8\) of a bank's generator state, got uint8 of shape \[4\]$/);
    await expect(MemoryBank.restore({ rows, generator: Tensor.zeros([generator.shape[0]]) })).rejects.toThrow(/^state\.generator must be .*, got float32 of shape/);
    // Bytes of the right count that are no state: named (libtorch's words named nothing).
    await expect(MemoryBank.restore({ rows, generator: Tensor.zeros([generator.shape[0]], { dtype: 'uint8' }) })).rejects.toThrow(/^state\.generator must be a bank's generator state \(the bytes its state\(\) gave\), got bytes libtorch refuses \(.*\): the state was damaged$/);
  });
});
