// Tensor operations that run on the native thread pool and resolve to new tensors.
import { binding } from './binding';
import { checkArrayOf, checkInteger, checkOptions, nativeCall, typeError } from './errors';
import { Tensor, handleOf } from './tensor';

/** Matrix product with numpy/torch broadcasting rules. */
export async function matmul(a: Tensor, b: Tensor): Promise<Tensor> {
  const ha = handleOf('a', a);
  const hb = handleOf('b', b);
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
  const [h, w] = checkArrayOf(arg, list, (a, d) => checkInteger(a, d, min));
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
  return nativeCall(async () => new Tensor(await binding.conv2d(hi, hw, hb, stride, padding)));
}
