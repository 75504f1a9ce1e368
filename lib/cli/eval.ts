// `pirl eval`: the weighted-kNN top-1 of a saved model's trunk (and with --linear-probe, the probe's).
import { EVAL_SIZE, KNN_DEFAULTS, resolveKnnOptions } from '../config';
import { evaluateTrunk, featureOptionsFor } from '../eval/knn';
import { PirlModel } from '../model';
import { describe, isArgumentError } from '../errors';
import { realPathOf } from '../folders';
import { UsageError, applyRunFlags, asFlags, knnSplit, largestClass, openData, optionsFromFlags, parseFlags, unreadableIn, unreadableOf, warnOfSize, type Flags } from './args';
import { Progress } from './progress';

const KNN_FLAGS = { k: 'k', tau: 'tau', size: 'size' };
export const EVAL_FLAGS: Flags = { values: ['data', 'test', 'layout', 'max-pixels', 'cache', 'device', 'threads', ...Object.keys(KNN_FLAGS)], switches: ['linear-probe', 'recursive'] };

export const EVAL_USAGE = `eval <model> [--data D] [--test D] [--k ${KNN_DEFAULTS.k}] [--tau ${KNN_DEFAULTS.tau}] [--linear-probe] [--size N (the model's training size, else ${EVAL_SIZE})] [--layout auto|classes] [--recursive] [--max-pixels N] [--cache FILE] [--device cpu|cuda] [--threads N]
                                weighted kNN top-1 of a saved model's trunk (default data: fashion-mnist); --linear-probe:
                                also a linear probe's top-1 (LinearProbe's defaults, trained on the same features); --cache: --data's
                                images decoded at this side, for later evaluations (of other checkpoints)`;

export async function evaluate(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, EVAL_FLAGS, 1, 'eval needs one <model.safetensors> argument');
  // Before any image is decoded (the whole folder was, before its labels were found missing).
  if (values.layout === 'flat') throw new UsageError('--layout flat reads a folder as unlabeled images: eval scores labeled data (a folder of class folders); give --layout classes, or leave it out');
  const knn = asFlags(values, KNN_FLAGS, 'options', () => resolveKnnOptions(optionsFromFlags(values, KNN_FLAGS)));
  const { device } = applyRunFlags(values);
  const model = await PirlModel.load(positionals[0], { device });
  const { size } = asFlags(values, KNN_FLAGS, 'options', () => featureOptionsFor(model, { size: knn.size }));
  warnOfSize(model, size);
  const spec = typeof values.data === 'string' ? values.data : 'fashion-mnist';
  if (values.data === undefined) console.error('pirl: no --data: kNN on fashion-mnist (its train set votes for its test set)');
  // By their real paths: a link to the data folder is the data folder.
  if (typeof values.test === 'string' && (await realPathOf(values.test)) === (await realPathOf(spec))) {
    console.error('pirl: warning: --test is --data: every test image votes for itself (k=1 scores 1); hold some out instead (drop --test)');
  }
  const { train, test } = await knnSplit(await openData(spec, size, values, 'train'), spec, typeof values.test === 'string' ? values.test : undefined, size, values);
  const progress = new Progress();
  const testSpec = typeof values.test === 'string' ? `--test ${values.test}` : `--data ${spec} (its held-out fifth)`;
  const linearProbe = values['linear-probe'] === true ? {} : null;
  const scores = await evaluateTrunk(model, train, test, { knn: { ...knn, size }, linearProbe }, progress.images('features')).catch((err) => {
    // The library names the sets 'train' and 'test': here they are what --data and --test gave.
    if (isArgumentError(err) && (err.argument === 'train' || err.argument === 'test')) {
      const expected = err.expected.replace("train's classes", `--data ${spec}'s classes`);
      const defaulted = values.data === undefined ? ' (no --data was given: fashion-mnist\'s train set votes; --data names the set that votes)' : '';
      throw new UsageError(`${err.argument === 'train' ? `--data ${spec}` : testSpec} must be ${expected}, got ${describe(err.received)}${defaulted}`);
    }
    throw err;
  });
  // Unreadable images are left out (of the data set by a cache, else of the passes): train and test count the images
  // scored, and with the unreadable ones the folders' images add up.
  const unreadable = new Set([...unreadableOf(train), ...unreadableOf(test)]).size;
  const unreadableOfTrain = new Set(unreadableIn(train));
  const [leftOfTrain, leftOfTest] = [unreadableOfTrain.size, unreadableIn(test).length];
  const [voted, scored] = [train.length - leftOfTrain, test.length - leftOfTest];
  // The split was said before the passes found these (a cache's were found first): the counts said again, as the JSON's.
  if (leftOfTrain + leftOfTest > 0) console.error(`pirl: ${unreadable} unreadable image(s) left out: ${scored} test image(s) scored against ${voted}`);
  // kNN takes the k nearest of what there is: said, so that the score is read as the vote of every image that voted.
  if (knn.k > voted) console.error(`pirl: --k ${knn.k} is more than the ${voted} images that voted (--data${values.test === undefined ? "'s four fifths" : ''}): each test image was voted on by all ${voted}`);
  // The protocol's k=200 is ImageNet's (~1,300 images a class): where no class has k images, every vote is mostly
  // other classes', which scored a small folder's features well below a small k's (0.46 against 0.56 at k 10).
  const largest = largestClass(train, unreadableOfTrain);
  if (knn.k <= voted && knn.k > largest) {
    console.error(`pirl: note: --k ${knn.k}${values.k === undefined ? ' (the default, the protocol\'s)' : ''} is more than the ${largest} images of the largest class that voted: ` +
      `each vote counts other classes' images too; a --k of at most ${largest} suits data this small`);
  }
  const probed = scores.linearProbeTop1 === null ? {} : { linearProbeTop1: scores.linearProbeTop1 };
  console.log(JSON.stringify({ knnTop1: scores.knnTop1, ...probed, train: voted, test: scored, size, ...(unreadable > 0 ? { unreadable } : {}) }));
}
