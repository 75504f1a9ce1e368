#!/usr/bin/env node
'use strict';
// `npm run demo`: PIRL pretraining on Fashion-MNIST (Debian's dataset-fashion-mnist, installed with
// apt-get as root unless PIRL_NO_APT=1) for a fixed number of epochs — about ten minutes of a 2-core
// CPU — then the weighted-kNN top-1 (k=200, τ=0.07) of the trained trunk next to the same trunk
// randomly initialised, evaluated identically; the time is reported. Writes demo-run/ (model,
// checkpoint, curves, result.json). Options: --epochs N (default 11), --subset N (training images,
// default 20000), --config JSON (overrides), --out DIR. `npm run bench:quality` is 14 epochs of all 60,000.
const fs = require('fs');
const path = require('path');

const { canUseApt, aptInstall } = require('./apt');
const { root, option: opt, compileTypeScript } = require('./bench-common');

// The data set, provisioned the way npm install provisions libtorch.
function provideFashionMnist(dir) {
  if (fs.existsSync(dir)) return;
  if (!canUseApt()) {
    throw new Error(`Fashion-MNIST is not in ${dir}. Install it: apt-get install dataset-fashion-mnist (as root; ` +
      `${process.env.PIRL_NO_APT ? 'PIRL_NO_APT is set, so the demo does not' : 'the demo does it itself when run as root'})`);
  }
  aptInstall(['dataset-fashion-mnist']);
}

async function main() {
  const started = Date.now();
  compileTypeScript();
  const pirl = require(path.join(root, 'dist'));
  const out = opt('--out', path.join(root, 'demo-run'));
  const epochs = opt('--epochs', 11);
  if (!Number.isSafeInteger(epochs) || epochs < 1) throw new RangeError(`--epochs must be a positive integer, got '${opt('--epochs')}'`);
  provideFashionMnist(pirl.FASHION_MNIST_DIR);
  fs.mkdirSync(out, { recursive: true });
  const train = await pirl.IdxDataset.fashionMnist('train');
  const test = await pirl.IdxDataset.fashionMnist('test');
  // A narrow ResNet-18 (small stem) on a subset of the training images.
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
  const trainingMinutes = (Date.now() - trainStart) / 60000; // bank init and the epochs
  await trainer.model.save(path.join(out, 'model.safetensors'));
  const trainedTop1 = await evaluate(trainer.model);
  const { writeCurves } = require(path.join(root, 'dist', 'cli', 'plot.js'));
  await writeCurves(path.join(out, 'curves.png'), curve, [[0, randomTop1], [epochs, trainedTop1]],
    Array.from({ length: epochs }, (_, e) => (e + 1) * stepsPerEpoch));
  const result = { randomInitKnnTop1: randomTop1, trainedKnnTop1: trainedTop1, epochs,
    trainingMinutes, totalMinutes: (Date.now() - started) / 60000, config };
  fs.writeFileSync(path.join(out, 'result.json'), `${JSON.stringify(result, null, 2)}\n`);
  console.log(`trained:     weighted kNN top-1 ${(100 * trainedTop1).toFixed(2)}%  (random init ${(100 * randomTop1).toFixed(2)}%); ` +
    `${epochs} epochs in ${trainingMinutes.toFixed(1)} minutes of training, ${result.totalMinutes.toFixed(1)} in all`);
  console.log(JSON.stringify(result));
}

main().catch((err) => {
  console.error(`pirl demo: ${err.message}`);
  process.exit(1);
});
