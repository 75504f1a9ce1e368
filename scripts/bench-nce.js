#!/usr/bin/env node
'use strict';
// `npm run bench:nce`: forward+backward time and extra peak memory of the fused NCE op against the
// naive gather+bmm reference, side by side in one run, each case in its own process, and the keyed draw
// of the B×K negatives that precedes the op in a training step. JSON on stdout.
// Options: --threads N (default: all cores), --reps N (default 3), --quick (small cases only).
const os = require('os');
const { build } = require('./build');

const { args, option: opt, median, runNceBench } = require('./bench-common');
const threads = opt('--threads', os.availableParallelism());
const reps = opt('--reps', 3);
const D = 128;
const sizes = args.includes('--quick') ? [[32, 4096]] : [[32, 4096], [256, 32000]];
const banks = [1281167, 60000];

build({ benchmarks: true, tests: false });

function measure(B, K, N, impl) {
  const r = runNceBench([B, K, N, D, impl, threads, reps]);
  return { ms: Math.round(median(r.ms) * 10) / 10, allMs: r.ms, extraMB: r.extraMB };
}

const results = [];
for (const [B, K] of sizes) {
  for (const N of banks) {
    const reference = measure(B, K, N, 'reference');
    const fused = measure(B, K, N, 'fused');
    const shared = measure(B, K, N, 'shared');
    const draw = measure(B, K, N, 'draw');
    results.push({
      B, K, N, D,
      reference, fused, shared, draw,
      fusedSpeedup: Math.round((reference.ms / fused.ms) * 100) / 100,
      fusedMemoryRatio: Math.round((reference.extraMB / Math.max(fused.extraMB, 0.1)) * 10) / 10,
      sharedSpeedup: Math.round((reference.ms / shared.ms) * 100) / 100,
    });
    process.stderr.write(`B=${B} K=${K} N=${N}: reference ${reference.ms} ms / ${reference.extraMB} MB, fused ${fused.ms} ms / ${fused.extraMB} MB, shared ${shared.ms} ms / ${shared.extraMB} MB, draw ${draw.ms} ms\n`);
  }
}
console.log(JSON.stringify({
  benchmark: 'nce', mode: 'nce', tau: 0.07, threads, reps,
  note: 'ms = median forward+backward (draw: the keyed B×K draw of negatives, positive excluded); extraMB = peak RSS above the set-up (bank, x, indices)',
  results,
}, null, 2));
