// The linear probe (docs/PIRL.md, "Evaluation protocols") as a classifier: a softmax layer trained with SGD on
// frozen features (standardised by the training set's mean and std), that labels new features and is saved
// and loaded as safetensors.
import { binding } from '../binding';
import { resolveLinearProbeOptions, type LinearProbeOptions } from '../config';
import { checkInteger, checkOptions, nativeCall, rangeError, typeError } from '../errors';
import { metadataField, jsonMetadata, readSafetensors, writeSafetensors } from '../safetensors';
import { Tensor, int64Tensor } from '../tensor';
import { MAX_CLASSES, checkFeatureRows, checkLabels } from './rows';
import { stoppable } from './stop';

// Of LinearProbeOptions, those of training (size is a feature pass's; signal stops the training between its steps).
export interface LinearProbeFitOptions extends Omit<LinearProbeOptions, 'size'> {
  /** The classes' names, label order (kept with the probe); their count is the number of classes. null: none. */
  classes?: string[] | null;
  /** The number of classes when no names are given (default, or null: the largest label + 1). */
  numClasses?: number | null;
}

const FIT_OPTIONS = ['epochs', 'batchSize', 'lr', 'weightDecay', 'seed', 'signal', 'classes', 'numClasses'] as const;
// Format of a saved probe's "pirl-linear-probe" metadata.
const PROBE_FORMAT = 1;

export class LinearProbe {
  private constructor(
    private readonly mean: Tensor,
    private readonly std: Tensor,
    private readonly weight: Tensor,
    private readonly bias: Tensor,
    /** The classes' names in label order, where known. */
    readonly classes: string[] | null,
  ) {}

  /** Trains a probe on `features` (N×F) labelled by `labels` (one per row, in [0, numClasses)). */
  static async fit(features: Tensor, labels: Int32Array, options: LinearProbeFitOptions = {}): Promise<LinearProbe> {
    const f = checkFeatureRows('features', features);
    if (f.shape[0] === 0) throw rangeError('features', 'at least one row', f.shape);
    checkLabels(labels, f.shape[0]);
    const { classes = null, numClasses = null, ...given } = checkOptions('options', options, FIT_OPTIONS) as LinearProbeFitOptions;
    if (classes !== null && (!Array.isArray(classes) || classes.length === 0 || classes.some((c) => typeof c !== 'string'))) {
      throw typeError('options.classes', 'a non-empty array of class names, or null', classes);
    }
    const named = numClasses === null ? null : checkInteger('options.numClasses', numClasses, 1, MAX_CLASSES);
    if (classes !== null && named !== null && named !== classes.length) throw rangeError('options.numClasses', `${classes.length} (options.classes' count) or left out`, named);
    const largest = labels.reduce((m, l) => Math.max(m, l), -1);
    const count = classes?.length ?? named ?? largest + 1;
    const bad = labels.findIndex((l) => l < 0 || l >= Math.min(count, MAX_CLASSES));
    if (bad >= 0) throw rangeError(`labels[${bad}]`, `a label in [0, ${Math.min(count, MAX_CLASSES)})${classes || named ? ` (${count} classes)` : ''}`, labels[bad]);
    const { size: _size, signal, ...probe } = resolveLinearProbeOptions(given);
    const t = await stoppable(signal, "the linear probe's training", (stop) => nativeCall(() => binding.linearProbeFit(f.handle, int64Tensor(labels).handle, count, probe, stop)));
    return new LinearProbe(new Tensor(t.mean), new Tensor(t.std), new Tensor(t.weight), new Tensor(t.bias), classes ? [...classes] : null);
  }

  /** F, the width of the features it takes. */
  get featureDim(): number {
    return this.weight.shape[0];
  }

  get numClasses(): number {
    return this.weight.shape[1];
  }

  /** The most likely class of each row of `features` (M×F, any device): M labels. */
  async predict(features: Tensor): Promise<Int32Array> {
    const f = checkFeatureRows('features', features, this.featureDim);
    const predicted = new Tensor(await nativeCall(() => binding.linearProbePredict(this.mean.handle, this.std.handle, this.weight.handle, this.bias.handle, f.handle)));
    return Int32Array.from(predicted.data() as BigInt64Array, Number);
  }

  async save(file: string): Promise<void> {
    const tensors: Array<[string, Tensor]> = [['mean', this.mean], ['std', this.std], ['weight', this.weight], ['bias', this.bias]];
    await writeSafetensors(file, tensors, { 'pirl-linear-probe': JSON.stringify({ format: PROBE_FORMAT, classes: this.classes }) });
  }

  /** A probe saved by `save`; its tensors are checked against each other. */
  static async load(file: string): Promise<LinearProbe> {
    const { tensors, metadata } = await readSafetensors(file);
    const meta = jsonMetadata(file, metadata, 'pirl-linear-probe');
    if (meta === undefined) throw new TypeError(`${file}: not a linear probe (no "pirl-linear-probe" metadata; LinearProbe.save writes one)`);
    const field = metadataField(file, 'pirl-linear-probe');
    if (meta.format !== PROBE_FORMAT) throw rangeError(`${field}.format`, `${PROBE_FORMAT} (this pirl's linear probe format)`, meta.format);
    const get = (name: string) => {
      const t = tensors.get(name);
      if (!t || t.dtype !== 'float32') throw typeError(`${file}: tensor "${name}"`, 'a float32 tensor', t ? t.dtype : 'none');
      return t;
    };
    const [mean, std, weight, bias] = ['mean', 'std', 'weight', 'bias'].map(get);
    const [width, count] = weight.shape;
    const fits = weight.shape.length === 2 && [mean, std].every((t) => t.shape.length === 2 && t.shape[0] === 1 && t.shape[1] === width) && bias.shape.length === 1 && bias.shape[0] === count;
    if (!fits) throw rangeError(`${file}: tensors`, 'mean and std 1×F and bias C for weight F×C', [mean, std, weight, bias].map((t) => t.shape));
    if (count === 0) throw rangeError(`${file}: tensor "weight"`, 'F×C with at least one class', weight.shape);
    // A NaN anywhere (or a std of 0) made every prediction class 0, silently.
    for (const [name, t] of [['mean', mean], ['std', std], ['weight', weight], ['bias', bias]] as const) {
      const values = t.data() as Float32Array;
      const bad = values.findIndex((v) => !Number.isFinite(v) || (name === 'std' && v <= 0));
      if (bad >= 0) throw rangeError(`${file}: tensor "${name}"[${bad}]`, name === 'std' ? 'a finite number > 0' : 'a finite number', values[bad]);
    }
    const classes = meta.classes ?? null;
    if (classes !== null && (!Array.isArray(classes) || classes.length !== count || classes.some((c) => typeof c !== 'string'))) {
      throw rangeError(`${field}.classes`, `null or ${count} class names`, classes);
    }
    return new LinearProbe(mean, std, weight, bias, classes as string[] | null);
  }
}
