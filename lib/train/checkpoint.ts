// A training checkpoint's "pirl-checkpoint" metadata: its format and its checks, for Trainer (resume, save) and for
// PirlModel.load (a checkpoint's model), which must not import the trainer.
import type { NativeTrainScalars } from '../binding';
import { resolveTrainConfig, type Device, type ResolvedTrainConfig } from '../config';
import type { DataDigest } from '../data/digest';
import type { FolderRead } from '../data/imageFolder';
import { checkBoolean, checkInteger, checkNumber, checkObject, checkOneOf, checkOptions, checkString, rangeError } from '../errors';
import { jsonMetadata, metadataField } from '../safetensors';

/** Where a run stands: the next step to take. */
export interface Position {
  /** The epoch in progress (or next), from 0: the epochs done. */
  epoch: number;
  /** Its steps done. */
  stepInEpoch: number;
  /** The run's steps done. */
  step: number;
}

/**
 * Format of a checkpoint's `pirl-checkpoint` metadata; earlier ones resume without what they lack (1:
 * config.syncBatchNorm and state.steps; 2: epochSoFar; 3: data, the data set's digest; 4: data.images and threads;
 * 5: config.sampler.photometricOps, 'one' then; 6: config.lrUpdate, 'step' then). A newer one is refused by its format.
 * data.read, added within format 7 (an earlier pirl ignores it), is null where absent.
 */
export const CHECKPOINT_FORMAT = 7;

export interface CheckpointMeta {
  format: number;
  config: ResolvedTrainConfig;
  /** The ranks the run trained on (absent in a single process's checkpoints before data parallelism: 1). */
  worldSize: number;
  position: Position;
  /** Z of both NCE terms, the fp16 loss scale and the steps taken. */
  state: NativeTrainScalars;
  /** The epoch in progress so far, so that its mean loss is the whole epoch's after a resume (absent before: none). */
  epochSoFar: EpochSoFar;
  /** What identifies the data set's rows (absent before format 4: not checked). */
  data: DataDigest | null;
  /** The intra-op threads the run stepped with: float sums split by thread, so the last bits follow them (absent before format 5: null). */
  threads: number | null;
}

/** The loss summed over the epoch's samples so far, and how many. */
export interface EpochSoFar {
  lossSum: number;
  images: number;
}

/**
 * A checkpoint's training config, the ranks it trained on, and the side its folder's images were stored at and how the
 * folder was read (null: not a folder, or not recorded), from its metadata (readSafetensorsMetadata), checked; `device` replaces the saved one.
 */
export function checkpointRunOf(file: string, metadata: Record<string, string>, device?: Device):
  { config: ResolvedTrainConfig; worldSize: number; storedSide: number | null; read: FolderRead | null } {
  const { config, worldSize, data } = checkpointMeta(file, metadata, device);
  // A folder's images are stored square, H×H×3; other data sets have no side to open at.
  const side = /^(\d+)×\1×3$/.exec(data?.images ?? '');
  return { config, worldSize, storedSide: side ? Number(side[1]) : null, read: data?.read ?? null };
}

function folderReadOf(field: string, value: unknown): FolderRead {
  const r = checkOptions(field, checkObject(field, value), ['layout', 'recursive']);
  return { layout: checkOneOf(`${field}.layout`, r.layout, ['flat', 'classes']), recursive: checkBoolean(`${field}.recursive`, r.recursive) };
}

/** The checkpoint's metadata, checked like user input (errors name the file and the field); `device` replaces the saved one. */
export function checkpointMeta(file: string, metadata: Record<string, string>, device: Device | undefined): CheckpointMeta {
  const meta = jsonMetadata(file, metadata, 'pirl-checkpoint');
  if (meta === undefined) {
    const model = metadata.pirl !== undefined ? ": it is a trained model (a run's model.safetensors), which holds no optimizer state or memory bank to go on from" : '';
    throw new TypeError(`${file}: not a pirl training checkpoint (no "pirl-checkpoint" metadata)${model}`);
  }
  const field = metadataField(file, 'pirl-checkpoint');
  checkOptions(field, meta, ['format', 'config', 'worldSize', 'position', 'state', 'epochSoFar', 'data', 'threads']);
  if (![1, 2, 3, 4, 5, 6, CHECKPOINT_FORMAT].includes(meta.format as number)) {
    throw rangeError(`${field}.format`, `1 to ${CHECKPOINT_FORMAT} (written by this pirl or an earlier one; a newer checkpoint resumes with the pirl that wrote it)`, meta.format);
  }
  const saved: Record<string, unknown> = {
    ...(meta.format === 1 ? { syncBatchNorm: false } : {}), ...((meta.format as number) < 7 ? { lrUpdate: 'step' } : {}), ...checkObject(`${field}.config`, meta.config),
  };
  // Before format 6 the photometric step applied one op, drawn: the run goes on as it trained.
  if ((meta.format as number) < 6) saved.sampler = { photometricOps: 'one', ...checkObject(`${field}.config.sampler`, saved.sampler) };
  const config = resolveTrainConfig(device === undefined ? saved : { ...saved, device }, `${field}.config`, true);
  const p = checkObject(`${field}.position`, meta.position);
  const position = {
    epoch: checkInteger(`${field}.position.epoch`, p.epoch, 0),
    stepInEpoch: checkInteger(`${field}.position.stepInEpoch`, p.stepInEpoch, 0),
    step: checkInteger(`${field}.position.step`, p.step, 0),
  };
  const s = checkObject(`${field}.state`, meta.state);
  const state = {
    zImage: checkNumber(`${field}.state.zImage`, s.zImage),
    zJigsaw: checkNumber(`${field}.state.zJigsaw`, s.zJigsaw),
    lossScale: checkNumber(`${field}.state.lossScale`, s.lossScale, { min: 0, minExclusive: true }),
    goodSteps: checkInteger(`${field}.state.goodSteps`, s.goodSteps, 0),
    // Format 1 did not record them: as many as its batches (the negatives' streams move on from there).
    steps: meta.format === 1 ? position.step : checkInteger(`${field}.state.steps`, s.steps, 0),
  };
  const worldSize = meta.worldSize === undefined ? 1 : checkInteger(`${field}.worldSize`, meta.worldSize, 1);
  // Formats 3 and 4 always have it; some format-2 files carry it too (written before the format said so).
  const e = (meta.format === 1 || meta.format === 2) && meta.epochSoFar === undefined ? { lossSum: 0, images: 0 } : checkObject(`${field}.epochSoFar`, meta.epochSoFar);
  const epochSoFar = { lossSum: checkNumber(`${field}.epochSoFar.lossSum`, e.lossSum), images: checkInteger(`${field}.epochSoFar.images`, e.images, 0) };
  const recordsImages = (meta.format as number) >= 5; // data.images and threads
  const d = recordsImages || meta.format === 4 ? checkObject(`${field}.data`, meta.data) : null;
  const data = d && {
    size: checkInteger(`${field}.data.size`, d.size, 0),
    labels: checkString(`${field}.data.labels`, d.labels),
    files: checkString(`${field}.data.files`, d.files),
    images: recordsImages ? checkString(`${field}.data.images`, d.images) : null,
    read: d.read === undefined || d.read === null ? null : folderReadOf(`${field}.data.read`, d.read),
  };
  const threads = recordsImages ? checkInteger(`${field}.threads`, meta.threads, 1) : null;
  return { format: CHECKPOINT_FORMAT, config, worldSize, position, state, epochSoFar, data, threads };
}
