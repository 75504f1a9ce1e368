// The public API, exported by index.ts: named, and as one default object.
export { Tensor } from './tensor';
export { OUT_OF_MEMORY, isArgumentError, isOutOfMemory } from './errors';
export type { ArgumentErrorInfo } from './errors';
export type { DType, Device, TypedArray } from './tensor';
export * as ops from './ops';
export { buildInfo, cudaMemory, setNumThreads, getNumThreads, setTf32, getTf32, setDeterministic, getDeterministic } from './runtime';
export type { BuildInfo, CudaMemory, Tf32 } from './runtime';
export { MemoryBank } from './memoryBank';
export type { Indices, MemoryBankState } from './memoryBank';
export { nceLoss, PirlLoss } from './loss';
export type { NceLossResult, PirlLossResult } from './loss';
export { PirlModel } from './model';
export type { Embeddings } from './model';
export type { StateDictScope, StepResult } from './binding';
export {
  PRESETS, RECIPES, distributedFromEnv, folderImageSize, resolveDistributedOptions, resolveFeatureOptions, resolveKnnOptions, resolveLinearProbeOptions, resolveLoaderOptions, resolveLossOptions, resolveMemoryBankOptions,
  resolveModelOptions, resolveNceOptions, resolveRunOptions, resolveSamplerConfig, resolveTrainConfig,
} from './config';
export type {
  Arch, DistributedOptions, EmbedLayer, PhotometricOps, Placement, FeatureOptions, KnnOptions, LinearProbeOptions, LoaderOptions, MemoryBankOptions, NceLossOptions, NceMode, PirlLossOptions, PirlModelOptions,
  Precision, Recipe, ResolvedDistributedOptions, ResolvedFeatureOptions, ResolvedKnnOptions, ResolvedLinearProbeOptions, ResolvedLoaderOptions, ResolvedLossOptions, ResolvedMemoryBankOptions,
  ResolvedModelOptions, ResolvedNceOptions, ResolvedRunOptions, ResolvedTrainConfig,
  RunOptions, SamplerConfig, SamplerOptions, SamplerPreset, Stem, TrainConfig,
} from './config';
export { readSafetensors, writeSafetensors, parseSafetensors, serializeSafetensors, SafetensorsError } from './safetensors';
export type { SafetensorsContent } from './safetensors';
export { ArrayDataset, IdxDataset, Subset, holdOut, FASHION_MNIST_DIR } from './data/datasets';
export type { BatchSource, Dataset } from './data/datasets';
export { AmbiguousLayoutError, FOLDER_LAYOUTS, ImageFolder, IMAGE_EXTENSIONS } from './data/imageFolder';
export type { FileVersion, FolderLayout, FolderWarning, ImageFolderOptions } from './data/imageFolder';
export { Loader, disposeBatch, evalImages } from './data/loader';
export type { PirlBatch } from './data/loader';
export { JIGSAW_CELLS, JIGSAW_PATCHES } from './data/jigsaw';
export { Trainer } from './train/trainer';
export type { BatchLogs, Callbacks, CreateOptions, EpochLogs, FitOptions, ProcessOptions, ResumeOptions } from './train/trainer';
export type { Position } from './train/checkpoint';
export { LR_UPDATES, lrAt, peakLr } from './train/schedule';
export type { LrSchedule, LrUpdate } from './train/schedule';
export { datasetFeatures, evaluateTrunk, featureOptionsFor, knnAccuracy, knnPredict, linearProbeAccuracy, nearestNeighbours } from './eval/knn';
export { embedImages, weightsDigest, type EmbedImagesOptions, type ImageFeatures, type ReusableFeatures } from './eval/embed';
export { loadImageFeatures, saveImageFeatures } from './eval/featuresFile';
export { LinearProbe, type LinearProbeFitOptions } from './eval/linearProbe';
export type { DatasetFeatures, FeatureProgress } from './eval/knn';
