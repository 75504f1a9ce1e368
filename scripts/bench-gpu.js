#!/usr/bin/env node
'use strict';
// `npm run bench:gpu`: the training step on a GPU, side by side in one run, JSON on stdout (logs on
// stderr). For ResNet-50 at the paper's sizes (224-px views + 9×64-px patches, K=32,000 negatives from
// a bank of 1,281,167 rows, B=64 and 128) and ResNet-18 at 96 px (B=32), in fp32 and bf16, and both
// memory formats, each step also replayed from a CUDA graph (cudaGraphs): the model step alone (one batch
// reused), end to end (the loader feeding it), the fused NCE op alone, the loader alone, and the peak
// GPU memory of each — next to the same step in
// PyTorch eager mode on the same GPU (bench/eager_step.py, python3's torch), as ratios. Writes
// bench/results/gpu-<card>.json when it ran on a GPU — after every case, the most telling first, so that
// a run cut short (a lent GPU's time limit) keeps what it measured ("complete": false).
// Options: --device cuda (default) | cpu (a small smoke run of the same code), --steps N (default 20),
// --quick (one case per part), --out FILE (another results file), --cases nce,loader,resnet50-paper@128,…
// (those parts, networks or network@batch only: what a short GPU loan has not measured yet).
const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');
const v8 = require('v8');
const vm = require('vm');

const { root, args, option: opt, median, compileTypeScript, nceBenchExe, runNceBench } = require('./bench-common');

const device = opt('--device', 'cuda');
const steps = opt('--steps', device === 'cpu' ? 3 : 20);
const quick = args.includes('--quick') || device === 'cpu';
const BANK_ROWS = 1281167;

const log = (text) => process.stderr.write(`${text}\n`);
const round = (x, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;

/**
 * An ImageNet-sized data set over a few hundred images in memory: its length (the bank's rows) is
 * 1,281,167 and sample i reads image i mod n, so the bank and the negatives are at full scale while
 * the pixels fit in memory.
 */
function syntheticDataset(pirl, side, images) {
  const pixels = new Uint8Array(images * side * side * 3);
  for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 2654435761) % 251;
  const source = pirl.Tensor.from(pixels, [images, side, side, 3]);
  return {
    length: BANK_ROWS,
    labels: null,
    classes: null,
    async batchSource(indices) {
      return { source, rows: pirl.Tensor.from(BigInt64Array.from(indices, (i) => BigInt(i % images))), indices: [...indices] };
    },
  };
}

const { GPU_CASES: CASES, gpuTrainConfig } = require('./bench-configs');

/** The same step in PyTorch eager mode on the same GPU (null on the CPU smoke run, or when python3 has no CUDA torch). */
function eager(c, batchSize, precision, channelsLast, negatives) {
  if (device === 'cpu') return null;
  try {
    const out = execFileSync('python3', [path.join(root, 'bench', 'eager_step.py'), c.arch, batchSize, c.imageSize, c.patchSize, negatives,
      BANK_ROWS, precision, channelsLast ? 1 : 0, steps].map(String), { stdio: ['ignore', 'pipe', 'inherit'] });
    return JSON.parse(out.toString().trim().split('\n').pop());
  } catch (err) {
    log(`eager PyTorch step failed: ${err.message.split('\n')[0]}`);
    return null;
  }
}

// The native memory of earlier cases goes with their handles, at a garbage collection.
v8.setFlagsFromString('--expose-gc');
const collectGarbage = vm.runInNewContext('gc');

/**
 * The allocator's peak since the last call, counted from `baseline` (bytes allocated before the case
 * made anything): the case's own memory, whatever earlier cases still hold. Resets the peak.
 */
function memoryOf(pirl, baseline) {
  const m = device === 'cpu' ? null : pirl.cudaMemory(device, { resetPeak: true });
  return m && { peakAllocatedMB: round((m.peakAllocated - baseline) / 2 ** 20), processPeakReservedMB: round(m.peakReserved / 2 ** 20) };
}

/**
 * Bytes allocated on the device now, after a collection: a case's baseline. The finalizers of collected
 * handles may run on a later turn of the event loop, so it collects and yields twice: with one collection,
 * earlier cases' memory was still being freed during the next case (the H200 run's NCE figures were negative).
 */
async function allocatedNow(pirl) {
  for (let i = 0; i < 2; i++) {
    collectGarbage();
    await new Promise((resolve) => setImmediate(resolve));
  }
  return device === 'cpu' ? 0 : pirl.cudaMemory(device).allocated;
}

async function timed(count, run) {
  const ms = [];
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    await run(i);
    ms.push(performance.now() - t0);
  }
  return ms;
}

/** Eager PyTorch's figures per (network, batch, precision, format): a graphed case compares with the same peer. */
const peers = new Map();

async function trainCase(pirl, c, batchSize, precision, channelsLast, cudaGraphs, data) {
  const config = gpuTrainConfig(c, { batchSize, precision, device, channelsLast, negatives: quick ? 1024 : c.negatives, steps });
  const baseline = await allocatedNow(pirl);
  const trainer = await pirl.Trainer.create(data, config, { cudaGraphs });
  const batch = await trainer.loader.makeBatch(Array.from({ length: batchSize }, (_, i) => i * 7919), 0);
  await timed(3, () => trainer.step(batch, 0.01)); // warm-up: cuDNN autotuning, the allocator, Z, the capture
  memoryOf(pirl, baseline);
  let replayed = 0;
  const stepMs = median(await timed(steps, async () => { replayed += (await trainer.step(batch, 0.01)).replayed ? 1 : 0; }));
  const stepMemory = memoryOf(pirl, baseline);
  const times = [];
  let last = 0;
  const from = trainer.progress.step; // fit's first 3 steps warm the loader up
  await trainer.fit({ callbacks: { onBatchEnd: (l) => { const now = performance.now(); if (l.step > from + 3) times.push(now - last); last = now; replayed += l.replayed ? 1 : 0; } } });
  const endMs = median(times);
  const modelStep = (batchSize * 1000) / stepMs, endToEnd = (batchSize * 1000) / endMs;
  const key = [c.name, batchSize, precision, channelsLast].join();
  if (!peers.has(key)) peers.set(key, eager(c, batchSize, precision, channelsLast, config.loss.negatives));
  const peer = peers.get(key);
  return {
    case: c.name, batch: batchSize, precision, channelsLast, cudaGraphs, replayedSteps: `${replayed}/${steps + config.epochLength}`, negatives: config.loss.negatives,
    modelStepImagesPerSecond: round(modelStep), endToEndImagesPerSecond: round(endToEnd),
    modelStepMs: round(stepMs, 2), endToEndMs: round(endMs, 2), memory: stepMemory, eager: peer,
    modelStepVsEager: peer && round(modelStep / peer.imagesPerSecond, 2), endToEndVsEager: peer && round(endToEnd / peer.imagesPerSecond, 2),
  };
}

async function nceCase(pirl, B, K) {
  const baseline = await allocatedNow(pirl);
  const bank = await pirl.MemoryBank.create({ size: quick ? 100000 : BANK_ROWS, dim: 128, device });
  // Unit rows, as PIRL's embeddings are (and pirl_bench_nce's): |s| <= 1, the scores a run sees.
  const x0 = new Float32Array(B * 128).map((_, i) => Math.sin(i));
  for (let b = 0; b < B; b++) {
    const row = x0.subarray(b * 128, (b + 1) * 128);
    const norm = Math.hypot(...row);
    row.forEach((v, d) => { row[d] = v / norm; });
  }
  const x = await pirl.Tensor.from(x0, [B, 128]).to(device);
  const positives = await pirl.Tensor.from(BigInt64Array.from({ length: B }, (_, i) => BigInt(i))).to(device);
  const out = {};
  for (const shared of [false, true]) {
    const negatives = await (shared ? bank.sampleShared(K) : bank.sampleNegatives(B, K));
    for (const mode of ['nce', 'infonce']) {
      await timed(3, () => pirl.nceLoss(x, bank, positives, negatives, { mode, z: 100 }));
      memoryOf(pirl, baseline);
      const ms = median(await timed(steps, () => pirl.nceLoss(x, bank, positives, negatives, { mode, z: 100 })));
      out[`${shared ? 'shared' : 'perSample'}-${mode}`] = { ms: round(ms, 3), memory: memoryOf(pirl, baseline) };
    }
  }
  return { B, K, N: bank.size, D: 128, forwardBackward: out, opAlone: nceOpAlone(B, K, bank.size) };
}

/**
 * The same op timed natively (build/pirl_bench_nce: a device synchronisation ends each repetition, no
 * JavaScript call around it), with Z given as in training, keyed as forwardBackward: what the op's targets
 * are about, and what the JavaScript call adds. Null where the benchmarks were not built
 * (node scripts/build.js --benchmarks).
 */
function nceOpAlone(B, K, N) {
  if (!fs.existsSync(nceBenchExe)) {
    log(`${nceBenchExe} not built (node scripts/build.js --benchmarks): the NCE op alone is not measured`);
    return null;
  }
  const run = (impl, mode) => {
    try {
      const { ms, extraMB } = runNceBench([B, K, N, 128, impl, os.availableParallelism(), steps, device, 100, mode]);
      return { ms: round(median(ms), 3), extraMB };
    } catch (err) {
      log(`pirl_bench_nce ${impl} ${mode} failed: ${err.message.split('\n')[0]}`); // the other cases still run
      return null;
    }
  };
  const out = {};
  for (const [key, impl] of [['perSample', 'fused'], ['shared', 'shared']]) {
    for (const mode of ['nce', 'infonce']) out[`${key}-${mode}`] = run(impl, mode);
  }
  return out;
}

async function loaderCase(pirl, c, batchSize, data) {
  const loader = new pirl.Loader(data, { batchSize, config: c.sampler, epochLength: steps + 1, device });
  let n = 0, start = 0;
  for await (const _ of loader.epoch(0)) if (n++ === 0) start = performance.now(); // the first batch warms up
  return { case: c.name, batch: batchSize, threads: pirl.getNumThreads(), samplesPerSecond: round(((n - 1) * batchSize * 1000) / (performance.now() - start)) };
}

// The cases to run: all of them, or those --cases names.
function plan() {
  if (args.includes('--cases') && !opt('--cases', '')) throw new RangeError('--cases needs a list: nce, loader, train, a network or network@batch');
  return selected(allJobs(), opt('--cases', ''));
}

// The jobs `cases` names (comma-separated: a part, nce or loader or train; a network; or network@batch), or all of them.
function selected(jobs, cases) {
  if (!cases) return jobs;
  const nameOf = (job) => (job.part === 'nce' ? ['nce'] : [job.part, job.c.name, `${job.c.name}@${job.batch}`]);
  const known = [...new Set(jobs.flatMap(nameOf))];
  const tokens = cases.split(',');
  const unknown = tokens.filter((t) => !known.includes(t));
  if (unknown.length > 0) throw new RangeError(`--cases must name some of ${known.join(', ')}; got ${unknown.join(', ')}`);
  return jobs.filter((job) => nameOf(job).some((name) => tokens.includes(name)));
}

/**
 * The cases in the order they run: the NCE op (seconds), the targets (each network's first batch
 * size, channels-last; each step eager, then replayed from a CUDA graph), the larger batches, then the rest.
 */
function allJobs() {
  const graphs = device === 'cpu' ? [false] : [false, true];
  const train = (c, batch, channelsLast, withGraphs = [false]) => ['fp32', 'bf16'].flatMap((precision) =>
    withGraphs.map((cudaGraphs) => ({ part: 'train', c, batch, precision, channelsLast, cudaGraphs })));
  if (quick) return [{ part: 'loader', c: CASES[1], batch: 8 }, ...train(CASES[1], 8, true), { part: 'nce', B: 32, K: 1024 }];
  return [
    { part: 'nce', B: 256, K: 32000 },
    ...CASES.flatMap((c) => train(c, c.batches[0], true, graphs)),
    ...CASES.flatMap((c) => c.batches.slice(1).flatMap((batch) => train(c, batch, true, graphs))),
    ...CASES.map((c) => ({ part: 'loader', c, batch: c.batches[0] })),
    ...CASES.flatMap((c) => c.batches.flatMap((batch) => train(c, batch, false))),
  ];
}

async function main() {
  const jobs = plan(); // a --cases mistake, before the build and any case
  compileTypeScript();
  const pirl = require(path.join(root, 'dist'));
  const info = pirl.buildInfo();
  if (device !== 'cpu' && !info.cuda.available) throw new Error(`bench:gpu needs a CUDA device; this pirl runs on libtorch ${info.libtorch.version} with CUDA ${info.cuda.compiled ? 'compiled, no device' : 'not compiled'} (--device cpu runs a smoke test)`);
  const card = device === 'cpu' ? `cpu-${os.availableParallelism()}core` : (process.env.PIRL_GPU_NAME || 'cuda').toLowerCase().replace(/[^a-z0-9]+/g, '-');
  // A selection of cases is a file of its own: it would replace the whole run's figures.
  const out = opt('--out', device === 'cpu' ? '' : path.join(root, 'bench', 'results', `gpu-${card}${opt('--cases', '') ? '-selected' : ''}.json`));
  const result = {
    benchmark: 'gpu', device, card, libtorch: info.libtorch.version, steps, quick, ...(opt('--cases', '') ? { cases: opt('--cases', '') } : {}), complete: false,
    note: 'images/s of B·(image + 9 patches); model step = the native step on one reused batch; end to end = Trainer.fit with the loader; cudaGraphs = the step replayed from a captured CUDA graph (replayedSteps of the timed steps and the fit); memory = the CUDA caching allocator peak during the measured steps, less what was allocated before the case (a CUDA graph replays into its pool unseen by that count: for cudaGraphs cases compare processPeakReservedMB)',
    training: [], nce: [], loaders: [],
  };
  const datasets = new Map();
  const dataFor = (c) => datasets.get(c) || datasets.set(c, syntheticDataset(pirl, quick ? 112 : c.side, 256)).get(c);
  for (const job of jobs) {
    const [list, entry] =
      job.part === 'train' ? [result.training, await trainCase(pirl, job.c, job.batch, job.precision, job.channelsLast, job.cudaGraphs, dataFor(job.c))]
      : job.part === 'loader' ? [result.loaders, await loaderCase(pirl, job.c, job.batch, dataFor(job.c))]
      : [result.nce, await nceCase(pirl, job.B, job.K)];
    list.push(entry);
    log(JSON.stringify(entry));
    if (out) fs.writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  }
  result.complete = true;
  const json = JSON.stringify(result, null, 2);
  console.log(json);
  if (out) fs.writeFileSync(out, `${json}\n`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
