#!/usr/bin/env node
'use strict';
// `npm run demo`: PIRL pretraining on Fashion-MNIST (Debian's dataset-fashion-mnist) within about ten
// minutes of this 2-core CPU, then the weighted-kNN top-1 (k=200, τ=0.07) of the trained trunk next
// to the same trunk randomly initialised, evaluated identically. Writes demo-run/ (model,
// checkpoint, curves, result.json). Options: --minutes M (training budget, default 8.5), --epochs N (instead of a budget),
// --subset N (training images, default 20000), --config JSON (overrides), --out DIR. `npm run bench:quality` is this with 30 minutes.
const path = require('path');

const { root, option: opt, compileTypeScript } = require('./bench-common');

async function main() {
  const started = Date.now();
  compileTypeScript();
  const pirl = require(path.join(root, 'dist'));
  const out = opt('--out', path.join(root, 'demo-run'));
  const minutes = Number(opt('--minutes', 8.5));
  if (!(minutes > 0)) throw new RangeError(`--minutes must be a positive number, got '${opt('--minutes')}'`);
  const fixedEpochs = opt('--epochs', 0);
  if (!Number.isSafeInteger(fixedEpochs) || fixedEpochs < 0) throw new RangeError(`--epochs must be a positive integer, got '${opt('--epochs')}'`);
  const fs = require('fs');
  fs.mkdirSync(out, { recursive: true });
  const train = await pirl.IdxDataset.fashionMnist('train');
  const test = await pirl.IdxDataset.fashionMnist('test');
  // A narrow ResNet-18 (small stem) on a subset of the training images: as many epochs as the budget allows.
  const subset = opt('--subset', 20000);
  if (!Number.isSafeInteger(subset) || subset < 1 || subset > train.length) throw new RangeError(`--subset must be an integer in [1, ${train.length}], got '${opt('--subset')}'`);
  const pretrain = new pirl.ArrayDataset(train.source.data().subarray(0, subset * 28 * 28), [subset, 28, 28, 1], {
    labels: train.labels.subarray(0, subset),
  });
  // Chosen by the runs listed in the README ("Demo"): each departure from the paper is measured there.
  const config = {
    model: { arch: 'resnet18', stem: 'small', width: 0.25 },
    loss: { negatives: 4096, mode: 'infonce' },
    sampler: { preset: 'small', imageScaleMin: 0.25 },
    batchSize: 128,
    baseLr: 0.12,
    warmupEpochs: 0,
    bankInit: 'features',
    seed: 0,
  };
  // --config '{"loss":{"lambda":0.25}}' overrides fields, one level deep (for experiments).
  for (const [key, value] of Object.entries(JSON.parse(opt('--config', '{}')))) {
    const merge = typeof value === 'object' && value !== null && typeof config[key] === 'object';
    config[key] = merge ? { ...config[key], ...value } : value;
  }
  // Evaluated at the size the sampler trains on (32 px for the small preset).
  const size = pirl.resolveSamplerConfig(config.sampler).imageSize;
  const evaluate = (model) => pirl.knnAccuracy(model, train, test, { size, k: 200, tau: 0.07 });
  const random = await pirl.PirlModel.create({ ...config.model, seed: config.seed });
  const randomTop1 = await evaluate(random);
  console.log(`random init: weighted kNN top-1 ${(100 * randomTop1).toFixed(2)}%`);
  const trainStart = Date.now();
  const stepsPerEpoch = Math.floor(subset / config.batchSize);
  const epochs = fixedEpochs || (await epochsWithin(pirl, pretrain, config, minutes * 60, stepsPerEpoch));
  console.log(`training ${epochs} epoch(s) of ${stepsPerEpoch} steps`);
  const trainer = await pirl.Trainer.create(pretrain, { ...config, epochs });
  const curve = [];
  await trainer.fit({
    checkpoint: path.join(out, 'checkpoint.safetensors'),
    checkpointEvery: 100,
    callbacks: {
      onBatchEnd: (l) => curve.push([l.step, l.loss]),
      onEpochEnd: (l) => console.log(`epoch ${l.epoch + 1}/${epochs}: loss ${l.loss.toFixed(4)}, ${l.imagesPerSecond.toFixed(0)} img/s`),
    },
  });
  const trainingMinutes = (Date.now() - trainStart) / 60000; // step-time probe, bank init and the epochs
  await trainer.model.save(path.join(out, 'model.safetensors'));
  const trainedTop1 = await evaluate(trainer.model);
  const { writeCurves } = require(path.join(root, 'dist', 'cli', 'plot.js'));
  await writeCurves(path.join(out, 'curves.png'), curve, [[0, randomTop1], [epochs, trainedTop1]]);
  const result = { randomInitKnnTop1: randomTop1, trainedKnnTop1: trainedTop1, epochs,
    trainingMinutes, totalMinutes: (Date.now() - started) / 60000, config };
  fs.writeFileSync(path.join(out, 'result.json'), `${JSON.stringify(result, null, 2)}\n`);
  console.log(`trained:     weighted kNN top-1 ${(100 * trainedTop1).toFixed(2)}%  (random init ${(100 * randomTop1).toFixed(2)}%)`);
  console.log(JSON.stringify(result));
}

// Epochs from a measured step time, so the run fits the budget. The first step is left out: it
// warms up, and in NCE mode it makes an extra pass to estimate Z.
async function epochsWithin(pirl, data, config, seconds, stepsPerEpoch) {
  const probe = await pirl.Trainer.create(data, { ...config, bankInit: 'random', epochs: 1, epochLength: 4 });
  let afterFirst = 0;
  await probe.fit({ callbacks: { onBatchEnd: (l) => { if (l.step === 1) afterFirst = Date.now(); } } });
  const stepSeconds = (Date.now() - afterFirst) / 1000 / 3;
  console.log(`~${stepSeconds.toFixed(2)} s/step`);
  return Math.max(1, Math.floor(seconds / (stepSeconds * stepsPerEpoch)));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
