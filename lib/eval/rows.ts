// The checks of rows of features that the evaluation functions take (kNN search and votes, the linear probe).
import { rangeError, typeError } from '../errors';
import { Tensor, handleOf } from '../tensor';

/** A 2-D float Tensor of at least one row (of `width` features, when given). */
export function checkFeatureRows(arg: string, value: unknown, width?: number): Tensor {
  handleOf(arg, value); // a live Tensor, named (its shape would say only "tensor was disposed")
  const t = value as Tensor;
  if (t.shape.length !== 2 || (t.dtype !== 'float32' && t.dtype !== 'float64')) throw typeError(arg, 'a 2-D float Tensor (rows of features)', `${t.dtype} ${t.shape.join('×')}`);
  // Rows of no features: kNN failed in libtorch's words, a probe learnt its bias alone.
  if (t.shape[1] === 0) throw rangeError(arg, 'rows of at least one feature', t.shape);
  if (width !== undefined && t.shape[1] !== width) throw rangeError(arg, `rows of ${width} features (the probe's)`, t.shape);
  return t;
}

/**
 * How many rows of a 2-D tensor to read (data()) at once: 64 MiB of them, at least one. A catalogue's features pass the
 * 4 GiB a typed array holds on Node 20.
 */
export function rowsAtOnce(t: Tensor): number {
  const rowBytes = t.shape[0] === 0 ? 1 : t.nbytes / t.shape[0];
  return Math.max(1, Math.floor(2 ** 26 / Math.max(1, rowBytes)));
}

/** Rows to search (at least one) and queries of their width on their device. */
export function checkSearch(features: unknown, queries: unknown): [Tensor, Tensor] {
  const f = checkFeatureRows('features', features);
  const q = checkFeatureRows('queries', queries);
  if (f.shape[1] !== q.shape[1]) throw rangeError('queries', `rows of ${f.shape[1]} features like features`, q.shape);
  if (f.device !== q.device) throw rangeError('queries', `on the device of features (${f.device})`, q.device);
  if (f.shape[0] === 0) throw rangeError('features', 'at least one row', f.shape);
  return [f, q];
}

/** A label beyond this is a mistake, not a class (a probe's weights, kNN's votes would take gigabytes). */
export const MAX_CLASSES = 1_000_000;

/** One label (in [0, MAX_CLASSES)) per row of `features`. */
export function checkLabels(labels: unknown, rows: number): Int32Array {
  if (!(labels instanceof Int32Array) || labels.length !== rows) {
    throw typeError('labels', `an Int32Array of ${rows} labels (one per row of features)`, labels instanceof Int32Array ? `${labels.length} labels` : labels);
  }
  const bad = labels.findIndex((label) => label < 0 || label >= MAX_CLASSES);
  if (bad >= 0) throw rangeError(`labels[${bad}]`, `a label in [0, ${MAX_CLASSES})`, labels[bad]);
  return labels;
}
