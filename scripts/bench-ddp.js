#!/usr/bin/env node
'use strict';
// `npm run bench:ddp`: data-parallel training on the CPU with Gloo on loopback: images/s of the whole
// training loop (sampler, step, bank) for 1 rank with 1 thread, 1 rank with all threads, and N ranks of
// one thread each (the same global batch) without and with SyncBatchNorm, each process pinned to its cores.
// JSON on stdout only.
// Options: --batch N (global, default 64), --steps N (timed, default 12), --ranks N (default: all cores).
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn } = require('child_process');

const { root, args, option: opt, compileTypeScript } = require('./bench-common');

// One rank: trains `steps` + 2 warm-up steps, prints its seconds for the timed steps.
async function child(globalBatch, steps, rank, worldSize, storeFile, syncBatchNorm) {
  const pirl = require(path.join(root, 'dist'));
  const n = globalBatch * (steps + 2), side = 32;
  const pixels = new Uint8Array(n * side * side * 3);
  for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 2654435761) % 251;
  const data = new pirl.ArrayDataset(pixels, [n, side, side, 3]);
  const distributed = worldSize > 1 ? { rank, worldSize, storeFile, timeoutMs: 120000 } : null;
  const trainer = await pirl.Trainer.create(data, {
    model: { arch: 'resnet18', stem: 'small', width: 0.5 }, bankInit: 'random', batchSize: globalBatch / worldSize, epochs: 1, seed: 1,
    syncBatchNorm,
  }, { distributed });
  let start = 0, seen = 0;
  await trainer.fit({ callbacks: { onBatchEnd: () => void (++seen === 2 && (start = performance.now())) } });
  console.log(JSON.stringify({ seconds: (performance.now() - start) / 1000, steps: seen - 2 }));
}

function runRanks(worldSize, threadsEach, globalBatch, steps, syncBatchNorm) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-bench-ddp-'));
  const runs = Array.from({ length: worldSize }, (_, rank) => new Promise((resolve, reject) => {
    const cores = `${rank * threadsEach}-${rank * threadsEach + threadsEach - 1}`;
    const p = spawn('/usr/bin/taskset', ['-c', cores, process.execPath, __filename, '--child', globalBatch, steps, rank, worldSize, path.join(dir, 'rendezvous'), String(syncBatchNorm)], {
      env: { ...process.env, PIRL_NUM_THREADS: String(threadsEach) }, stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`rank ${rank} exited with ${code}`))));
  }));
  return Promise.all(runs).finally(() => fs.rmSync(dir, { recursive: true, force: true }));
}

async function main() {
  if (args[0] === '--child') return child(Number(args[1]), Number(args[2]), Number(args[3]), Number(args[4]), args[5], args[6] === 'true');
  const cores = os.availableParallelism();
  const globalBatch = opt('--batch', 64), steps = opt('--steps', 12), ranks = opt('--ranks', cores);
  require('./build').build({});
  compileTypeScript();
  const measure = async (worldSize, threadsEach, syncBatchNorm = false) => {
    const r = await runRanks(worldSize, threadsEach, globalBatch, steps, syncBatchNorm);
    const seconds = Math.max(...r.map((x) => x.seconds));
    return { ranks: worldSize, threadsPerRank: threadsEach, syncBatchNorm, imagesPerSecond: Math.round((globalBatch * steps) / seconds) };
  };
  const oneThread = await measure(1, 1);
  const oneRank = await measure(1, ranks);
  const manyRanks = await measure(ranks, 1);
  const synced = await measure(ranks, 1, true);
  console.log(JSON.stringify({
    benchmark: 'ddp', device: 'cpu', backend: 'gloo (loopback)', model: 'resnet18 small stem, width 0.5, 32 px', globalBatch, steps, cores,
    runs: [oneThread, oneRank, manyRanks, synced],
    // Of N ranks against N times one rank: what the collectives and the replicated bank update cost.
    scalingEfficiency: Number((manyRanks.imagesPerSecond / (ranks * oneThread.imagesPerSecond)).toFixed(3)),
    ranksOverThreads: Number((manyRanks.imagesPerSecond / oneRank.imagesPerSecond).toFixed(3)),
    // SyncBatchNorm's two small allreduces per BatchNorm layer and pass, and its unfused normalisation.
    syncBatchNormOverPerRank: Number((synced.imagesPerSecond / manyRanks.imagesPerSecond).toFixed(3)),
  }, null, 2));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
