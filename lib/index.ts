// Public entry point of pirl.
import { initRuntime } from './runtime';

initRuntime();

export { Tensor } from './tensor';
export type { DType, Device, TypedArray } from './tensor';
export * as ops from './ops';
export { buildInfo, setNumThreads, getNumThreads } from './runtime';
export type { BuildInfo } from './runtime';
export { MemoryBank } from './memoryBank';
export type { MemoryBankOptions, MemoryBankState } from './memoryBank';
export { nceLoss, PirlLoss } from './loss';
export type { NceLossOptions, NceLossResult, NceMode, PirlLossOptions, PirlLossResult } from './loss';
export { PirlModel } from './model';
export type { Arch, Embeddings, PirlModelOptions, Stem } from './model';
export { readSafetensors, writeSafetensors, parseSafetensors, serializeSafetensors, SafetensorsError } from './safetensors';
export type { SafetensorsContent } from './safetensors';
export { ArrayDataset, IdxDataset, FASHION_MNIST_DIR } from './data/datasets';
export type { BatchSource, Dataset } from './data/datasets';
export { ImageFolder, IMAGE_EXTENSIONS } from './data/imageFolder';
export type { ImageFolderOptions } from './data/imageFolder';
export { Loader, evalImages } from './data/loader';
export type { LoaderOptions, PirlBatch } from './data/loader';
export { PRESETS, resolveSamplerConfig } from './data/sampler';
export type { SamplerConfig, SamplerPreset } from './data/sampler';
export { Trainer } from './train/trainer';
export type { BatchLogs, Callbacks, EpochLogs, FitOptions, TrainConfig } from './train/trainer';
export { lrAt, peakLr } from './train/schedule';
export type { LrSchedule } from './train/schedule';
export { knnAccuracy, linearProbeAccuracy, datasetFeatures, nearestNeighbours } from './eval/knn';
export type { DatasetFeatures, FeatureOptions, KnnOptions, LinearProbeOptions } from './eval/knn';
