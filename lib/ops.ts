// Tensor operations that run on the native thread pool and resolve to new tensors.
import { binding } from './binding';
import { checkArrayOf, checkInteger, checkOptions, nativeCall, rangeError, typeError } from './errors';
import { MAX_ELEMENTS, Tensor, handleOf } from './tensor';

const shapeText = (shape: readonly number[]) => `[${shape.join(', ')}]`;

/** `t` (named `arg`) of `first`'s dtype and device (named `firstArg`): libtorch's messages named neither. */
function checkAlike(arg: string, t: Tensor, firstArg: string, first: Tensor): void {
  if (t.dtype !== first.dtype) throw typeError(arg, `a ${first.dtype} Tensor like ${firstArg}`, t.dtype);
  if (t.device !== first.device) throw rangeError(arg, `a Tensor on ${first.device} like ${firstArg}`, t.device);
}

/** A result of `shape` of at most 2^50 values, as a Tensor's; else `arg` (given `received`) must be `expected`. */
function checkResultSize(arg: string, shape: number[], expected: string, received: unknown): void {
  const count = shape.reduce((a, b) => a * b, 1);
  if (count > MAX_ELEMENTS) throw rangeError(arg, `${expected} (it would be ${shapeText(shape)})`, received);
}

/** Matrix product with numpy/torch broadcasting rules. */
export async function matmul(a: Tensor, b: Tensor): Promise<Tensor> {
  const ha = handleOf('a', a);
  const hb = handleOf('b', b);
  checkAlike('b', b, 'a', a);
  const [sa, sb] = [a.shape, b.shape];
  if (sa.length === 0) throw rangeError('a', 'a Tensor of at least 1 dimension', sa);
  if (sb.length === 0) throw rangeError('b', 'a Tensor of at least 1 dimension', sb);
  // b's rows meet a's columns: its only dimension for a vector, else its second to last.
  const inner = sa[sa.length - 1];
  const rows = sb.length === 1 ? sb[0] : sb[sb.length - 2];
  const [need, has] = [sb.length === 1 ? 'values' : 'rows', sa.length === 1 ? 'values' : 'columns'];
  if (rows !== inner) throw rangeError('b', `a Tensor of ${inner} ${need} to meet a's ${inner} ${has} (a is ${shapeText(sa)})`, sb);
  // The dimensions before the last two broadcast, aligned from the right: equal, or one of them 1.
  const [ba, bb] = [sa.slice(0, -2), sb.slice(0, -2)];
  for (let i = 1; i <= Math.min(ba.length, bb.length); i++) {
    const [x, y] = [ba[ba.length - i], bb[bb.length - i]];
    if (x !== y && x !== 1 && y !== 1) throw rangeError('b', `a Tensor whose batch dimensions broadcast with a's ${shapeText(ba)} (each equal, or 1)`, sb);
  }
  // The product's size, checked as a Tensor's: [2^40, 0]·[0, 2^40] met libtorch's "Storage size calculation overflowed".
  const batch = Array.from({ length: Math.max(ba.length, bb.length) }, (_, i) => {
    const [x, y] = [ba[ba.length - 1 - i] ?? 1, bb[bb.length - 1 - i] ?? 1];
    return x === 1 ? y : x; // broadcast: a 1 takes the other's (0 too)
  });
  const out = [...batch, ...(sa.length > 1 ? [sa[sa.length - 2]] : []), ...(sb.length > 1 ? [sb[sb.length - 1]] : [])];
  checkResultSize('b', out, `a Tensor whose product with a ${shapeText(sa)} holds at most 2^50 values`, sb);
  return nativeCall(async () => new Tensor(await binding.matmul(ha, hb)));
}

export interface Conv2dOptions {
  bias?: Tensor | null;
  stride?: number | [number, number];
  padding?: number | [number, number];
}

function pair(arg: string, value: number | [number, number], min: number): [number, number] {
  const list = typeof value === 'number' ? [value, value] : value;
  if (!Array.isArray(list) || list.length !== 2) throw typeError(arg, `an integer >= ${min} or [height, width]`, value);
  // int32's range, as cuDNN's: a larger one only overflowed the output's size.
  const [h, w] = checkArrayOf(arg, list, (a, d) => checkInteger(a, d, min, 2 ** 31 - 1));
  return [h, w];
}

/** 2-D convolution of NCHW `input` with OIHW `weight`. */
export async function conv2d(input: Tensor, weight: Tensor, options: Conv2dOptions = {}): Promise<Tensor> {
  const hi = handleOf('input', input);
  const hw = handleOf('weight', weight);
  const { bias, stride: strideGiven, padding: paddingGiven } = checkOptions('options', options, ['bias', 'stride', 'padding']) as Conv2dOptions;
  const hb = bias == null ? null : handleOf('options.bias', bias);
  const stride = pair('options.stride', strideGiven ?? 1, 1);
  const padding = pair('options.padding', paddingGiven ?? 0, 0);
  checkConv2d(input, weight, bias ?? null, padding);
  const [h, w] = input.shape.slice(-2);
  const outHeight = Math.floor((h + 2 * padding[0] - weight.shape[2]) / stride[0]) + 1;
  const outWidth = Math.floor((w + 2 * padding[1] - weight.shape[3]) / stride[1]) + 1;
  // Blamed on the padding where there is one (2^30 of it), else on the weight's output channels.
  const [arg, expected, received] = padding[0] + padding[1] > 0
    ? ['options.padding', 'a padding', padding]
    : ['weight', 'a weight', weight.shape];
  checkResultSize(arg, [...input.shape.slice(0, -3), weight.shape[0], outHeight, outWidth],
    `${expected} whose output of input ${shapeText(input.shape)} holds at most 2^50 values`, received);
  return nativeCall(async () => new Tensor(await binding.conv2d(hi, hw, hb, stride, padding)));
}

// conv2d's tensors against each other: shapes named by argument, as libtorch's own messages did not.
function checkConv2d(input: Tensor, weight: Tensor, bias: Tensor | null, padding: [number, number]): void {
  if (input.dtype !== 'float32' && input.dtype !== 'float64') throw typeError('input', 'a float32 or float64 Tensor', input.dtype);
  checkAlike('weight', weight, 'input', input);
  if (bias) checkAlike('options.bias', bias, 'input', input);
  const [si, sw] = [input.shape, weight.shape];
  if (si.length !== 4 && si.length !== 3) throw rangeError('input', 'N×C×H×W (or one image, C×H×W)', si);
  if (sw.length !== 4) throw rangeError('weight', 'O×C×kH×kW', sw);
  const [channels, height, width] = si.slice(-3);
  if (sw[1] !== channels) throw rangeError('weight', `O×${channels}×kH×kW: input has ${channels} channels (input is ${shapeText(si)})`, sw);
  const [h, w] = [height + 2 * padding[0], width + 2 * padding[1]];
  if (sw[2] < 1 || sw[3] < 1) throw rangeError('weight', 'O×C×kH×kW with a kernel of at least 1×1', sw);
  if (sw[2] > h || sw[3] > w) throw rangeError('weight', `a kernel no larger than the padded input's ${h}×${w} (input is ${shapeText(si)}, options.padding [${padding.join(', ')}])`, sw);
  if (bias && (bias.shape.length !== 1 || bias.shape[0] !== sw[0])) throw rangeError('options.bias', `${sw[0]} values, one per output channel of weight ${shapeText(sw)}`, bias.shape);
}
