import { setImmediate as nextTurn } from 'timers/promises';

import { Tensor } from '../lib';

const MB4 = 1024 * 1024; // float32 elements in 4 MB
const COUNT = 10_000; // 40 GB in total: only a bounded resident set shows that memory is released

// Node-API runs finalizers of garbage-collected objects on a later turn of the event loop, so the
// loop yields every 16 tensors (64 MB), as any real program (a training loop awaiting steps) does.
async function rssGrowthMB(work: (i: number) => void): Promise<number> {
  for (let i = 0; i < 50; i++) work(i); // warm up allocator and GC heuristics
  await nextTurn();
  const before = process.memoryUsage().rss;
  let peak = before;
  for (let i = 0; i < COUNT; i++) {
    work(i);
    if (i % 16 === 0) {
      await nextTurn();
      peak = Math.max(peak, process.memoryUsage().rss);
    }
  }
  return (peak - before) / 2 ** 20;
}

describe('10,000 tensors of 4 MB are released', () => {
  test('native tensors released at once by dispose(), even in a loop that never yields', () => {
    for (let i = 0; i < 50; i++) Tensor.zeros([MB4]).dispose();
    const before = process.memoryUsage().rss;
    let peak = before;
    for (let i = 0; i < COUNT; i++) {
      Tensor.zeros([MB4]).dispose();
      if (i % 250 === 0) peak = Math.max(peak, process.memoryUsage().rss);
    }
    const growth = (peak - before) / 2 ** 20;
    // 40 GB pass through; a few dozen MB of allocator slack is not a leak. Measured first, before the
    // other tests' garbage-collected tensors have shaped the allocator's free lists.
    expect(growth).toBeLessThan(128);
  });

  test('native tensors dropped without dispose() (GC sees their native memory)', async () => {
    const growth = await rssGrowthMB((i) => {
      const t = Tensor.zeros([MB4]);
      (t.data() as Float32Array)[i % MB4] = 1; // touch it through an external view as well
    });
    expect(growth).toBeLessThan(1024);
  });

  test('tensors over Float32Arrays dropped without dispose()', async () => {
    const growth = await rssGrowthMB((i) => {
      const a = new Float32Array(MB4);
      a[i % MB4] = 1;
      Tensor.from(a);
    });
    expect(growth).toBeLessThan(1024);
  });

});
