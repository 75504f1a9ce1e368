// `pirl train`, `pirl eval`, `pirl embed`, `pirl export`: the command-line face of the library.
import { promises as fs } from 'fs';
import * as path from 'path';
import { parseArgs } from 'util';

import { IdxDataset, type Dataset } from '../data/datasets';
import { ImageFolder } from '../data/imageFolder';
import { datasetFeatures, knnAccuracy } from '../eval/knn';
import { PirlModel } from '../model';
import { setNumThreads } from '../runtime';
import { writeSafetensors } from '../safetensors';
import { Trainer, type TrainConfig } from '../train/trainer';
import { writeCurves } from './plot';

export class UsageError extends Error {}

export function integer(name: string, value: string | undefined, fallback: number, min = 0): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got '${value}'`);
  return n;
}

function decimal(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`--${name} must be a number >= 0, got '${value}'`);
  return n;
}

function oneOf<T extends string>(name: string, value: string | undefined, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (!allowed.includes(value as T)) throw new UsageError(`--${name} must be one of ${allowed.join(', ')}, got '${value}'`);
  return value as T;
}

/** --size of a folder's stored images: room for the preset's crops unless given. */
export function folderSize(value: string | undefined, preset: 'small' | 'paper'): number {
  return integer('size', value, preset === 'paper' ? 292 : 64, 1);
}

/** A data argument: 'fashion-mnist' (its train or test split) or a folder of images. */
export async function openData(spec: string, size: number, split: 'train' | 'test' = 'train'): Promise<Dataset> {
  if (spec === 'fashion-mnist') return IdxDataset.fashionMnist(split);
  return ImageFolder.open(spec, { size });
}

const formatDuration = (s: number) => (s >= 3600 ? `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m` : `${Math.floor(s / 60)}m${Math.round(s % 60)}s`);

/** One line that rewrites itself on a terminal, and plain periodic lines elsewhere (logs, CI). */
class Progress {
  private lastPlain = 0;
  constructor(private readonly tty = Boolean(process.stderr.isTTY)) {}
  update(text: string, done: boolean): void {
    if (this.tty) {
      process.stderr.write(`\r\x1b[K${text}${done ? '\n' : ''}`);
    } else if (done || Date.now() - this.lastPlain > 10_000) {
      process.stderr.write(`${text}\n`);
      this.lastPlain = Date.now();
    }
  }
}

export const TRAIN_USAGE = `train <data> [options]          pretrain PIRL on a folder of images or 'fashion-mnist'
        --out DIR (pirl-run)  --config FILE.json  --resume
        --arch resnet18|resnet34|resnet50 (resnet18)  --stem small|imagenet (small)  --width W (1)
        --preset small|paper (small)  --size N (64: stored side of folder images)
        --epochs N (10)  --batch N (256)  --negatives K (4096)  --lr BASE (0.03)  --warmup EPOCHS (0)
        --mode nce|infonce (nce)  --z frozen|ema (frozen)  --lambda L (0.5)  --tau T (0.07)
        --bank-init random|features (random)  --epoch-length N  --checkpoint-every N (100)
        --knn-every N (0: off; needs labels)
        --threads N  --device cpu|cuda  --seed N (0)`;

export async function train(args: string[]): Promise<void> {
  const stringOptions = ['out', 'config', 'arch', 'stem', 'width', 'preset', 'size', 'epochs', 'batch', 'negatives', 'lr',
    'warmup', 'mode', 'z', 'lambda', 'tau', 'bank-init', 'epoch-length', 'checkpoint-every', 'knn-every', 'threads', 'device', 'seed'];
  const options: Record<string, { type: 'string' | 'boolean' }> = Object.fromEntries(stringOptions.map((k) => [k, { type: 'string' }]));
  options.resume = { type: 'boolean' };
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options });
  const v = values as Record<string, string | undefined>;
  if (positionals.length !== 1) throw new UsageError('train needs one <data> argument');
  if (v.threads !== undefined) setNumThreads(integer('threads', v.threads, 1, 1));
  const out = v.out ?? 'pirl-run';
  await fs.mkdir(out, { recursive: true });
  const fromFile: TrainConfig = v.config ? JSON.parse(await fs.readFile(v.config, 'utf8')) : {};
  const preset = oneOf('preset', v.preset, ['small', 'paper'] as const, 'small');
  const config: TrainConfig = {
    ...fromFile,
    model: {
      ...fromFile.model,
      arch: oneOf('arch', v.arch, ['resnet18', 'resnet34', 'resnet50'] as const, fromFile.model?.arch ?? 'resnet18'),
      stem: oneOf('stem', v.stem, ['small', 'imagenet'] as const, fromFile.model?.stem ?? (preset === 'small' ? 'small' : 'imagenet')),
      width: decimal('width', v.width, fromFile.model?.width ?? 1),
      device: oneOf('device', v.device, ['cpu', 'cuda'] as const, (fromFile.model?.device as 'cpu' | 'cuda') ?? 'cpu'),
    },
    loss: {
      ...fromFile.loss,
      negatives: integer('negatives', v.negatives, fromFile.loss?.negatives ?? 4096, 1),
      mode: oneOf('mode', v.mode, ['nce', 'infonce'] as const, fromFile.loss?.mode ?? 'nce'),
      z: oneOf('z', v.z, ['frozen', 'ema'] as const, fromFile.loss?.z ?? 'frozen'),
      lambda: decimal('lambda', v.lambda, fromFile.loss?.lambda ?? 0.5),
      tau: decimal('tau', v.tau, fromFile.loss?.tau ?? 0.07),
    },
    sampler: fromFile.sampler ?? preset,
    epochs: integer('epochs', v.epochs, fromFile.epochs ?? 10, 1),
    batchSize: integer('batch', v.batch, fromFile.batchSize ?? 256, 1),
    baseLr: decimal('lr', v.lr, fromFile.baseLr ?? 0.03),
    warmupEpochs: decimal('warmup', v.warmup, fromFile.warmupEpochs ?? 0),
    seed: integer('seed', v.seed, fromFile.seed ?? 0),
    bankInit: oneOf('bank-init', v['bank-init'], ['random', 'features'] as const, fromFile.bankInit ?? 'random'),
    ...(v['epoch-length'] || fromFile.epochLength ? { epochLength: integer('epoch-length', v['epoch-length'], fromFile.epochLength ?? 1, 1) } : {}),
  };
  const spec = positionals[0];
  const data = await openData(spec, folderSize(v.size, preset));
  const checkpoint = path.join(out, 'checkpoint.safetensors');
  const trainer = values.resume ? await Trainer.resume(checkpoint, data) : await Trainer.create(data, config);
  const knnEvery = integer('knn-every', v['knn-every'], 0);
  const testData = knnEvery && spec === 'fashion-mnist' ? await openData(spec, 0, 'test') : data;
  if (knnEvery && !data.labels) throw new UsageError('--knn-every needs labeled data (class subfolders or fashion-mnist)');
  const metrics = path.join(out, 'metrics.jsonl');
  const lossCurve: Array<[number, number]> = [];
  const knnCurve: Array<[number, number]> = [];
  const progress = new Progress();
  const started = Date.now();
  const firstStep = trainer.progress.step; // a resumed run has done steps before this process
  let total = 0;
  await trainer.fit({
    checkpoint,
    checkpointEvery: integer('checkpoint-every', v['checkpoint-every'], 100, 1),
    callbacks: {
      onTrainBegin: (i) => void (total = i.epochs * i.stepsPerEpoch),
      onBatchEnd: async (l) => {
        lossCurve.push([l.step, l.loss]);
        const eta = ((Date.now() - started) / 1000 / (l.step - firstStep)) * (total - l.step);
        progress.update(`epoch ${l.epoch + 1}/${trainer.config.epochs} step ${l.step}/${total} loss ${l.loss.toFixed(4)} lr ${l.lr.toExponential(2)} ${l.imagesPerSecond.toFixed(0)} img/s ETA ${formatDuration(eta)}`, false);
        await fs.appendFile(metrics, `${JSON.stringify({ type: 'batch', time: new Date().toISOString(), ...l })}\n`);
      },
      onEpochEnd: async (l) => {
        let knn: number | undefined;
        if (knnEvery && (l.epoch + 1) % knnEvery === 0) {
          knn = await knnAccuracy(trainer.model, data, testData, { size: trainer.config.sampler.imageSize });
          knnCurve.push([l.epoch + 1, knn]);
        }
        progress.update(`epoch ${l.epoch + 1}/${trainer.config.epochs} loss ${l.loss.toFixed(4)} ${l.imagesPerSecond.toFixed(0)} img/s${knn === undefined ? '' : ` kNN top-1 ${(knn * 100).toFixed(2)}%`}`, true);
        await fs.appendFile(metrics, `${JSON.stringify({ type: 'epoch', time: new Date().toISOString(), ...l, knn })}\n`);
        await writeCurves(path.join(out, 'curves.png'), lossCurve, knnCurve);
      },
    },
  });
  await trainer.model.save(path.join(out, 'model.safetensors'));
  console.log(`wrote ${path.join(out, 'model.safetensors')}, ${checkpoint}, ${metrics}, ${path.join(out, 'curves.png')}`);
}

export async function evaluate(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: {
    data: { type: 'string' }, test: { type: 'string' }, k: { type: 'string' }, tau: { type: 'string' }, size: { type: 'string' } } });
  if (positionals.length !== 1) throw new UsageError('eval needs one <model.safetensors> argument');
  const model = await PirlModel.load(positionals[0]);
  const spec = values.data ?? 'fashion-mnist';
  const size = integer('size', values.size, 32, 1);
  const train = await openData(spec, size, 'train');
  const test = values.test ? await openData(values.test, size) : spec === 'fashion-mnist' ? await openData(spec, size, 'test') : train;
  const accuracy = await knnAccuracy(model, train, test, { size, k: integer('k', values.k, 200, 1), tau: decimal('tau', values.tau, 0.07) });
  console.log(JSON.stringify({ knnTop1: accuracy, train: train.length, test: test.length }));
}

export async function embed(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: {
    out: { type: 'string' }, layer: { type: 'string' }, size: { type: 'string' } } });
  if (positionals.length !== 2) throw new UsageError('embed needs <model.safetensors> <folder>');
  if (!values.out) throw new UsageError('embed needs --out FILE.safetensors');
  const model = await PirlModel.load(positionals[0]);
  const size = integer('size', values.size, 32, 1);
  const folder = await ImageFolder.open(positionals[1], { size: Math.max(size, 8) });
  const layer = oneOf('layer', values.layer, ['res5', 'f'] as const, 'res5');
  const { features, indices } = await datasetFeatures(model, folder, { size, layer });
  const files = indices.map((i) => path.relative(positionals[1], folder.files[i]));
  await writeSafetensors(values.out, [['features', features]], { files: JSON.stringify(files), layer });
  console.log(`wrote ${features.shape.join('×')} features of ${files.length} images to ${values.out}`);
}

export async function exportTrunk(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { out: { type: 'string' } } });
  if (positionals.length !== 1 || !values.out) throw new UsageError('export needs <model.safetensors> --out FILE.safetensors');
  const model = await PirlModel.load(positionals[0]);
  await model.exportTrunk(values.out);
  console.log(`wrote the ${model.options.arch} trunk with torchvision's names to ${values.out}`);
}

