// PirlModel: the ResNet trunk with PIRL's f and g heads (shared/PIRL.md, "Network"), in libtorch.
import { binding, type NativeModelOptions, type PirlModelHandle } from './binding';
import { checkInteger, checkOneOf, nativeCall, rangeError, typeError } from './errors';
import { readSafetensors, writeSafetensors } from './safetensors';
import { Tensor, checkDevice, handleOf, type Device } from './tensor';

export type Arch = 'resnet18' | 'resnet34' | 'resnet50';
export type Stem = 'imagenet' | 'small';

export interface PirlModelOptions {
  /** ResNet depth (paper: resnet50). */
  arch?: Arch;
  /** 'imagenet': 7×7 stride-2 conv and max-pool; 'small': 3×3 stride-1 conv, no pool (28–96 px images). */
  stem?: Stem;
  /** Multiplies every stage's width; only 1 is torchvision-compatible. */
  width?: number;
  /** D of f and g (128). */
  embeddingDim?: number;
  /** Seeds the initial weights (default 0): the same options give the same model. */
  seed?: number;
  /** NHWC activations and weights (default: measured 1.13× faster for a CPU training step, bench:model). */
  channelsLast?: boolean;
  /**
   * Whether the jigsaw-patch pass also updates the BatchNorm running statistics, as in VISSL (default
   * false: eval mode sees whole images, so only the image pass sets them; +1.3 kNN points measured on
   * Fashion-MNIST, README "Demo").
   */
  patchRunningStats?: boolean;
  device?: Device;
}

export interface Embeddings {
  f: Tensor;
  g: Tensor;
}

const ARCHS: readonly Arch[] = ['resnet18', 'resnet34', 'resnet50'];
const PATCHES = 9;

function checkOptions(options: PirlModelOptions): NativeModelOptions & { device: Device } {
  if (typeof options !== 'object' || options === null) throw typeError('options', 'an object', options);
  const arch = options.arch ?? 'resnet50';
  if (!ARCHS.includes(arch)) throw typeError('options.arch', `one of ${ARCHS.join(', ')}`, arch);
  const stem = checkOneOf('options.stem', options.stem ?? 'imagenet', ['imagenet', 'small'] as const);
  const width = options.width ?? 1;
  if (typeof width !== 'number' || !(width > 0) || !Number.isFinite(width)) throw rangeError('options.width', 'a positive number', width);
  const channelsLast = options.channelsLast ?? true;
  if (typeof channelsLast !== 'boolean') throw typeError('options.channelsLast', 'a boolean', channelsLast);
  const patchRunningStats = options.patchRunningStats ?? false;
  if (typeof patchRunningStats !== 'boolean') throw typeError('options.patchRunningStats', 'a boolean', patchRunningStats);
  return {
    arch,
    stem,
    width,
    embeddingDim: checkInteger('options.embeddingDim', options.embeddingDim ?? 128, 1),
    channelsLast,
    patchRunningStats,
    seed: checkInteger('options.seed', options.seed ?? 0, 0),
    device: checkDevice('options.device', options.device ?? 'cpu'),
  };
}

export class PirlModel {
  readonly options: Readonly<NativeModelOptions>;
  /** @internal */
  readonly handle: PirlModelHandle;

  private constructor(handle: PirlModelHandle, options: NativeModelOptions) {
    this.handle = handle;
    this.options = Object.freeze({ ...options });
  }

  /** A new model with torchvision's initialisation, built off the JavaScript thread. */
  static async create(options: PirlModelOptions = {}): Promise<PirlModel> {
    const { device, ...native } = checkOptions(options);
    const model = new PirlModel(await nativeCall(() => binding.createPirlModel(native)), native);
    if (device !== 'cpu') await model.to(device);
    return model;
  }

  /** F: width of the pooled res5 features. */
  get featureDim(): number {
    return this.handle.info().featureDim;
  }

  get device(): Device {
    return this.handle.info().device as Device;
  }

  get training(): boolean {
    return this.handle.isTraining();
  }

  /** Parameter counts of the trunk, each head and in total. */
  parameters(): { trunk: number; fHead: number; gHead: number; total: number } {
    return this.handle.info().parameters;
  }

  train(): this {
    this.handle.setTraining(true);
    return this;
  }

  eval(): this {
    this.handle.setTraining(false);
    return this;
  }

  async to(device: Device): Promise<this> {
    const target = checkDevice('device', device);
    await nativeCall(() => this.handle.to(target));
    return this;
  }

  private checkImages(arg: string, images: Tensor, leading: number): number[] {
    handleOf(arg, images);
    const shape = images.shape;
    const min = this.handle.info().minInputSize;
    const expected = leading === 1 ? 'B×3×H×W' : 'B×9×3×P×P';
    if (images.dtype !== 'float32') throw typeError(arg, 'a float32 Tensor', images.dtype);
    if (shape.length !== 3 + leading) throw rangeError(arg, `${expected}`, shape);
    if (leading === 2 && shape[1] !== PATCHES) throw rangeError(arg, `${expected} (9 jigsaw patches per sample)`, shape);
    if (shape[leading] !== 3) throw rangeError(arg, `${expected} with 3 channels`, shape);
    const [h, w] = shape.slice(leading + 1);
    if (h < min || w < min) {
      throw rangeError(arg, `${expected} with sides of at least ${min} px for the '${this.options.stem}' stem`, shape);
    }
    return shape;
  }

  /** f(v_I) and g(v_It) for a batch: images B×3×H×W, patches B×9×3×P×P in their sampled order. */
  async forward(images: Tensor, patches: Tensor): Promise<Embeddings> {
    const [batch] = this.checkImages('images', images, 1);
    const [patchBatch] = this.checkImages('patches', patches, 2);
    if (batch !== patchBatch) throw rangeError('patches', `a batch of ${batch} like images`, patches.shape);
    const out = await nativeCall(() => this.handle.forward(images.handle, patches.handle));
    return { f: new Tensor(out.f), g: new Tensor(out.g) };
  }

  /**
   * Features in eval mode without autograd: 'res5' (pooled trunk features, for transfer and kNN) or
   * 'f' (the f head's embedding). Runs in batches of `batchSize`; the result is on the CPU.
   */
  async embed(images: Tensor, options: { layer?: 'res5' | 'f'; batchSize?: number } = {}): Promise<Tensor> {
    this.checkImages('images', images, 1);
    const layer = checkOneOf('options.layer', options.layer ?? 'res5', ['res5', 'f'] as const);
    const batchSize = checkInteger('options.batchSize', options.batchSize ?? 256, 1);
    return new Tensor(await nativeCall(() => this.handle.embed(images.handle, layer, batchSize)));
  }

  /** Named parameters and buffers: the whole model, or the trunk alone under torchvision's names. */
  stateDict(scope: 'all' | 'trunk' = 'all'): Map<string, Tensor> {
    const { names, tensors } = this.handle.stateDict(scope);
    return new Map(names.map((name, i) => [name, new Tensor(tensors[i])]));
  }

  /** Loads named tensors; names and shapes are checked before anything is copied. */
  loadStateDict(values: Map<string, Tensor>, options: { scope?: 'all' | 'trunk'; strict?: boolean } = {}): void {
    if (!(values instanceof Map)) throw typeError('values', 'a Map of name → Tensor', values);
    const names = [...values.keys()];
    const tensors = names.map((n) => handleOf(`values.get('${n}')`, values.get(n)));
    this.handle.loadStateDict(options.scope ?? 'all', names, tensors, options.strict ?? true);
  }

  /** The whole model (trunk, heads and options) as safetensors. */
  async save(file: string): Promise<void> {
    await writeSafetensors(file, this.stateDict('all'), { format: 'pt', pirl: JSON.stringify(this.options) });
  }

  /** A model saved by `save`, with its options. */
  static async load(file: string, options: { device?: Device } = {}): Promise<PirlModel> {
    const { tensors, metadata } = await readSafetensors(file);
    if (!metadata.pirl) throw new TypeError(`${file}: no pirl model options in its metadata; for a torchvision trunk use importTrunk`);
    const model = await PirlModel.create({ ...(JSON.parse(metadata.pirl) as PirlModelOptions) });
    model.loadStateDict(tensors);
    if (options.device) await model.to(options.device);
    return model;
  }

  /**
   * The trunk with exactly the keys of torchvision's `resnetXX().state_dict()` less `fc.*`: in Python,
   * `m = resnet18(); m.fc = torch.nn.Identity(); m.load_state_dict(tensors, strict=True)`.
   */
  async exportTrunk(file: string): Promise<void> {
    await writeSafetensors(file, this.stateDict('trunk'), { format: 'pt', arch: this.options.arch });
  }

  /** Loads a torchvision-named trunk (its `fc.*` tensors, if any, are ignored). */
  async importTrunk(file: string): Promise<void> {
    const { tensors } = await readSafetensors(file);
    for (const name of [...tensors.keys()]) if (name.startsWith('fc.')) tensors.delete(name);
    this.loadStateDict(tensors, { scope: 'trunk' });
  }
}
