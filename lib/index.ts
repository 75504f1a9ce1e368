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
