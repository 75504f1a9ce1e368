// PirlModel: the ResNet trunk with PIRL's f and g heads (docs/PIRL.md, "Network"), in libtorch.
import { binding, type PirlModelHandle, type StateDictScope, type TensorHandle } from './binding';
import {
  EMBED_LAYERS, checkDevice, normalization, placementDevice, resolveFeatureOptions, resolveModelOptions, type Device, type EmbedLayer, type Placement, type PirlModelOptions, type ResolvedModelOptions,
} from './config';
import { JIGSAW_PATCHES } from './data/jigsaw';
import { checkBoolean, checkFile, checkInteger, checkOneOf, checkOptions, errorFrom, nativeCall, rangeError, typeError } from './errors';
import { jsonMetadata, metadataField, readSafetensors, readSafetensorsMetadata, writeSafetensors } from './safetensors';
import { Tensor, handleOf } from './tensor';
import { checkpointRunOf } from './train/checkpoint';

export interface Embeddings {
  f: Tensor;
  g: Tensor;
}

/** A state dict's parts: every tensor, or the trunk's alone. */
const STATE_DICT_SCOPES: readonly StateDictScope[] = ['all', 'trunk'];

/** Format of the `pirl` metadata of a model file; files without `format` are the first layout (bare options). */
const MODEL_FILE_FORMAT = 1;

/** F, the width of the pooled res5 features, as the native trunk computes it (stage widths round(base·width) ≥ 1). */
function featureDimOf(options: ResolvedModelOptions): number {
  return Math.max(1, Math.round(512 * options.width)) * (options.arch === 'resnet50' ? 4 : 1);
}

// A trunk file given as a model: what it is (`pirl export` writes its arch, stem and width) and how to load it.
function trunkHint(described: string | undefined): string {
  let what = "a trunk (torchvision's?)", options = '{ arch, stem, width }';
  try {
    const { arch, stem, width } = JSON.parse(described ?? '') as { arch: string; stem: string; width: number };
    what = `a trunk from pirl export (${arch}, ${stem} stem, width ${width})`;
    options = JSON.stringify({ arch, stem, width });
  } catch {
    // not described: the general form
  }
  return `it is ${what}, not a pirl model: in the API, PirlModel.create(${options}) then model.importTrunk(file) loads it`;
}

// What a file of pirl's that holds no model or trunk is, by its metadata, and which model to give instead (undefined: neither).
function otherFileKind(m: Record<string, string>): { kind: string; model: string } | undefined {
  if (m.files !== undefined && m.layer !== undefined) return { kind: 'a features file of `pirl embed` (image embeddings)', model: 'that made it' };
  return m['pirl-linear-probe'] !== undefined ? { kind: 'a linear probe (LinearProbe.load reads it)', model: 'whose features it classifies' } : undefined;
}

/** A file's weights by its metadata: a whole model (a model file, a checkpoint's), a trunk (pirl export's, torchvision's), or neither. */
export function weightsKind(m: Record<string, string>): 'model' | 'trunk' | 'other' {
  if (m.pirl !== undefined || m['pirl-checkpoint'] !== undefined) return 'model';
  return otherFileKind(m) ? 'other' : 'trunk';
}

/**
 * The model a model file (save's) or a training checkpoint (its model.* tensors: a run killed before it wrote its
 * model) describes in its metadata: its options, checked like user input (errors name the file and the field), the
 * prefix of its tensors and the side it was trained at. A checkpoint's run is read as on `device` (it may have trained
 * on a GPU this machine lacks).
 */
function modelOf(file: string, m: Record<string, string>, device: Device): { options: ResolvedModelOptions; prefix: string; imageSize?: number } {
  if (m['pirl-checkpoint'] !== undefined) {
    const { config } = checkpointRunOf(file, m, device);
    return { options: config.model, prefix: 'model.', imageSize: config.sampler.imageSize };
  }
  const object = jsonMetadata(file, m, 'pirl');
  if (object === undefined) {
    const other = otherFileKind(m);
    const hint = other ? `it is ${other.kind}, not a model: give the model ${other.model}` : trunkHint(m['pirl-trunk']);
    throw new TypeError(`${file}: no pirl model options in its metadata; ${hint}`);
  }
  const field = metadataField(file, 'pirl');
  const options = object.format === undefined ? object : object.format === MODEL_FILE_FORMAT ? object.model : undefined;
  if (options === undefined) throw rangeError(`${field}.format`, `${MODEL_FILE_FORMAT} (this pirl's model file format)`, object.format);
  const resolved = resolveModelOptions(options as PirlModelOptions, object.format === undefined ? field : `${field}.model`, true);
  const imageSize = object.imageSize === undefined ? {} : { imageSize: checkInteger(`${field}.imageSize`, object.imageSize, 1) };
  return { options: resolved, prefix: '', ...imageSize };
}

/**
 * Options that disagree with a file's own tensors would build a model of the wrong size (a few wrong
 * digits of `width` can ask for gigabytes) before any tensor is compared: this compares first.
 * `tensors` are named as in the model's state dict.
 */
/** `value` as a PirlModel: by handle, not class (a model of another copy of pirl is one too, as sourceOf's tensors). */
export function checkModel(arg: string, value: unknown): PirlModel {
  if (!((value as PirlModel | undefined)?.handle instanceof binding.PirlModelHandle)) throw typeError(arg, 'a PirlModel', value);
  return value as PirlModel;
}

export function checkTensorsFitOptions(file: string, tensors: Map<string, Tensor>, o: ResolvedModelOptions): void {
  const expected: Array<[string, number[]]> = [
    ['trunk.conv1.weight', [Math.max(1, Math.round(64 * o.width)), 3, o.stem === 'small' ? 3 : 7, o.stem === 'small' ? 3 : 7]],
    ['fHead.fc.weight', [o.embeddingDim, featureDimOf(o)]],
  ];
  for (const [name, shape] of expected) {
    const got = tensors.get(name)?.shape;
    if (!got || got.join() !== shape.join()) {
      throw new RangeError(`${file}: its options (${o.arch}, stem ${o.stem}, width ${o.width}, embeddingDim ${o.embeddingDim}) need tensor '${name}' of shape [${shape.join(', ')}], the file has ${got ? `[${got.join(', ')}]` : 'none'}`);
    }
  }
}

const namedTensors = ({ names, tensors }: { names: string[]; tensors: TensorHandle[] }): Map<string, Tensor> =>
  new Map(names.map((name, i) => [name, new Tensor(tensors[i])]));

export class PirlModel {
  readonly options: Readonly<ResolvedModelOptions>;
  /** @internal */
  readonly handle: PirlModelHandle;
  /**
   * The side of the views it was trained on (a Trainer's sampler.imageSize), kept in its file; null when
   * not known. Evaluate and embed at it: `pirl eval` and `pirl embed` do when --size is not given.
   */
  imageSize: number | null = null;

  private constructor(handle: PirlModelHandle, options: ResolvedModelOptions) {
    this.handle = handle;
    this.options = Object.freeze({ ...options });
  }

  /** A new model with torchvision's initialisation, built off the JavaScript thread, on `placement.device` (default 'cpu'). */
  static async create(options: PirlModelOptions = {}, placement: Placement = {}): Promise<PirlModel> {
    const resolved = resolveModelOptions(options);
    const device = placementDevice(placement);
    const model = new PirlModel(await nativeCall(() => binding.createPirlModel(resolved)), resolved);
    if (device !== 'cpu') await model.to(device);
    return model;
  }

  /** F: width of the pooled res5 features. */
  get featureDim(): number {
    return this.handle.info().featureDim;
  }

  /** The width of `layer`'s features (embed's): F for 'res5', the embedding's for 'f'. */
  widthOf(layer: EmbedLayer): number {
    return checkOneOf('layer', layer, EMBED_LAYERS) === 'f' ? this.options.embeddingDim : this.featureDim;
  }

  /** Where the parameters are (the model is the one owner of its device). */
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

  /**
   * Lets go of the model's memory now rather than when it is collected (a service swapping models): every
   * later use is an error ('the model was disposed'); calls in flight (an embedImages, a datasetFeatures pass)
   * and a Trainer training it finish first.
   */
  dispose(): void {
    this.handle.dispose();
  }

  get disposed(): boolean {
    return this.handle.disposed();
  }

  /**
   * @internal Another reference to this model, for work of several calls (a pass over a data set, a run's
   * checkpoints): dispose() of this one does not end it; its own dispose() (or collection) lets go.
   */
  retain(): PirlModel {
    const other = new PirlModel(this.handle.retain(), this.options);
    other.imageSize = this.imageSize;
    return other;
  }

  async to(device: Device): Promise<this> {
    const target = checkDevice('device', device);
    await nativeCall(() => this.handle.to(target));
    return this;
  }

  private checkImages(arg: string, images: Tensor, leading: number): number[] {
    handleOf(arg, images);
    const shape = images.shape;
    const min = this.minInputSize;
    const expected = leading === 1 ? 'B×3×H×W' : 'B×9×3×P×P';
    if (images.dtype !== 'float32') throw typeError(arg, 'a float32 Tensor', images.dtype);
    if (shape.length !== 3 + leading) throw rangeError(arg, `${expected}`, shape);
    if (leading === 2 && shape[1] !== JIGSAW_PATCHES) throw rangeError(arg, `${expected} (9 jigsaw patches per sample)`, shape);
    if (shape[leading] !== 3) throw rangeError(arg, `${expected} with 3 channels`, shape);
    if (shape[0] === 0) throw rangeError(arg, `${expected} with at least one sample`, shape);
    const [h, w] = shape.slice(leading + 1);
    if (h < min || w < min) {
      throw rangeError(arg, `${expected} with sides of at least ${min} px for the '${this.options.stem}' stem`, shape);
    }
    return shape;
  }

  /**
   * @internal A batch's views checked as forward takes them (named `${prefix}images`, `${prefix}patches`: a trainer's
   * step checks its batch here too): its size.
   */
  checkViews(images: Tensor, patches: Tensor, prefix = ''): number {
    const [batch] = this.checkImages(`${prefix}images`, images, 1);
    const [patchBatch] = this.checkImages(`${prefix}patches`, patches, 2);
    if (batch !== patchBatch) throw rangeError(`${prefix}patches`, `a batch of ${batch} like ${prefix}images`, patches.shape);
    return batch;
  }

  /** f(v_I) and g(v_It) for a batch: images B×3×H×W, patches B×9×3×P×P in their sampled order. */
  async forward(images: Tensor, patches: Tensor): Promise<Embeddings> {
    this.checkViews(images, patches);
    const out = await nativeCall(() => this.handle.forward(images.handle, patches.handle));
    return { f: new Tensor(out.f), g: new Tensor(out.g) };
  }

  /**
   * Features in eval mode without autograd: 'res5' (pooled trunk features, for transfer and kNN) or
   * 'f' (the f head's embedding). Runs in batches of `batchSize` on the model's device; the result is on the CPU.
   */
  async embed(images: Tensor, options: { layer?: EmbedLayer; batchSize?: number | null } = {}): Promise<Tensor> {
    const [, , height, width] = this.checkImages('images', images, 1);
    // The images are given: of the feature options only layer and batchSize apply.
    const { layer, batchSize } = resolveFeatureOptions(checkOptions('options', options, ['layer', 'batchSize']));
    return new Tensor(await nativeCall(() => this.handle.embed(images.handle, layer, batchSize ?? this.embedBatchSize(height, width))));
  }

  /**
   * Images per batch of embed() and the feature passes when none is given: 512, fewer of large ones — as many
   * as make the activations of 512 32-px images after the stem (a batch of 512 4,000-px images would fill the memory).
   */
  embedBatchSize(height: number, width = height): number {
    checkInteger('height', height, 1);
    checkInteger('width', width, 1);
    const stride = this.options.stem === 'imagenet' ? 4 : 1; // the stem's downsampling before res2
    const pixels = Math.ceil(height / stride) * Math.ceil(width / stride);
    return Math.max(1, Math.min(512, Math.floor((512 * 32 * 32) / pixels)));
  }

  /** The smallest side an image may have: the stem and the four stages must leave it at least one pixel. */
  get minInputSize(): number {
    return binding.minInputSize(this.options.stem);
  }

  /**
   * Named parameters and buffers (copies: one moment's, while training goes on): the whole model, or the trunk
   * alone under torchvision's names. Taken on the model's thread after the calls queued before it (a step, an embed).
   */
  async stateDict(scope: StateDictScope = 'all'): Promise<Map<string, Tensor>> {
    const checked = checkOneOf('scope', scope, STATE_DICT_SCOPES);
    return namedTensors(await nativeCall(() => this.handle.stateDict(checked)));
  }

  /**
   * Loads named tensors, on the model's thread after the calls queued before it; names and shapes are checked
   * before anything is copied.
   */
  async loadStateDict(values: Map<string, Tensor>, options: { scope?: StateDictScope; strict?: boolean } = {}): Promise<void> {
    if (!(values instanceof Map)) throw typeError('values', 'a Map of name → Tensor', values);
    checkOptions('options', options, ['scope', 'strict']);
    const scope = checkOneOf('options.scope', options.scope ?? 'all', STATE_DICT_SCOPES);
    const strict = checkBoolean('options.strict', options.strict ?? true);
    const names = [...values.keys()];
    const other = names.findIndex((n) => typeof n !== 'string');
    if (other >= 0) throw typeError(`values.keys()[${other}]`, 'a parameter name (a string)', names[other]);
    const tensors = names.map((n) => handleOf(`values.get('${n}')`, values.get(n)));
    await nativeCall(() => this.handle.loadStateDict(scope, names, tensors, strict));
  }

  /** The whole model (trunk, heads and options) as safetensors. */
  async save(file: string): Promise<void> {
    checkFile('file', file);
    const trained = this.imageSize === null ? {} : { imageSize: checkInteger('model.imageSize', this.imageSize, 1) };
    await writeSafetensors(file, await this.stateDict('all'), { format: 'pt', pirl: JSON.stringify({ format: MODEL_FILE_FORMAT, model: this.options, ...trained }) });
  }

  /**
   * A model saved by `save`, with its options, on `placement.device` (default 'cpu'); or the model of a training
   * checkpoint (a run stopped before it wrote its model).
   */
  static async load(file: string, placement: Placement = {}): Promise<PirlModel> {
    const device = placementDevice(placement); // before reading a file that may be large
    // The metadata first: a file that holds no model is refused before its tensors are read (a header of millions took
    // seconds and gigabytes).
    const { options, prefix, imageSize } = modelOf(file, await readSafetensorsMetadata(file), device);
    const all = (await readSafetensors(file)).tensors;
    const tensors = prefix === '' ? all : new Map([...all].flatMap(([name, t]) => (name.startsWith(prefix) ? [[name.slice(prefix.length), t] as const] : [])));
    checkTensorsFitOptions(file, tensors, options);
    const model = await PirlModel.create(options, { device });
    // Named by the file: `pirl search` reads two ("missing 1 tensor(s): …" said neither).
    await model.loadStateDict(tensors).catch((err: Error) => {
      model.dispose();
      throw errorFrom(`${file}: ${err.message}`, err);
    });
    if (imageSize !== undefined) model.imageSize = imageSize;
    return model;
  }

  /**
   * The trunk with exactly the keys of torchvision's `resnetXX().state_dict()` less `fc.*`: in Python,
   * `m = resnet18(); m.fc = torch.nn.Identity(); m.load_state_dict(tensors, strict=True)` (the small stem:
   * README "Transfer"). Its "pirl-trunk" metadata says how to rebuild and feed it: arch, stem, width, the
   * side it was trained at (null: unknown) and the normalisation.
   */
  async exportTrunk(file: string): Promise<void> {
    checkFile('file', file);
    const { arch, stem, width } = this.options;
    const trunk = { arch, stem, width, imageSize: this.imageSize, ...normalization() };
    await writeSafetensors(file, await this.stateDict('trunk'), { format: 'pt', arch, 'pirl-trunk': JSON.stringify(trunk) });
  }

  /**
   * Loads a torchvision-named trunk (its `fc.*` tensors, if any, are ignored; `num_batches_tracked` may be
   * missing, as PyTorch's load_state_dict allows). A trunk of pirl export's that is another arch, stem or width
   * is refused saying which; errors name the file. The model's imageSize becomes the trunk's (null where the file
   * does not say it: torchvision's).
   */
  async importTrunk(file: string): Promise<void> {
    checkFile('file', file);
    const { tensors, metadata } = await readSafetensors(file);
    if (metadata.pirl !== undefined || metadata['pirl-checkpoint'] !== undefined) {
      throw new TypeError(`${file} is a whole pirl model, not a trunk: PirlModel.load(file) reads it (and its exportTrunk(file) writes its trunk)`);
    }
    const other = otherFileKind(metadata);
    if (other) throw new TypeError(`${file} is ${other.kind}, not a trunk: importTrunk reads what exportTrunk (pirl export) writes, or torchvision's`);
    const described = jsonMetadata(file, metadata, 'pirl-trunk');
    if (described !== undefined) {
      const { arch, stem, width } = this.options;
      if (described.arch !== arch || described.stem !== stem || described.width !== width) {
        const { arch: a, stem: s, width: w } = described;
        throw new RangeError(`${file} holds a trunk of ${String(a)} (stem ${String(s)}, width ${String(w)}); this model is ${arch} (stem ${stem}, width ${width}): ` +
          `PirlModel.create(${JSON.stringify({ arch: a, stem: s, width: w })}) makes a model it fits`);
      }
    }
    // The side the trunk was trained at becomes the model's (unknown: null); this model's own no longer describes it.
    const trained = described?.imageSize;
    const imageSize = trained === undefined || trained === null ? null : checkInteger(`${metadataField(file, 'pirl-trunk')}.imageSize`, trained, 1);
    for (const name of [...tensors.keys()]) if (name.startsWith('fc.')) tensors.delete(name);
    try {
      await this.loadStateDict(tensors, { scope: 'trunk' });
    } catch (err) {
      if (err instanceof Error) err.message = `${file}: ${err.message} (this model: ${this.options.arch}, stem ${this.options.stem}, width ${this.options.width})`;
      throw err;
    }
    this.imageSize = imageSize;
  }
}
