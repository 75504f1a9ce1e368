// PIRL's learning rate (docs/PIRL.md, "Optimisation"): lr = base·batch/256, a linear warm-up,
// then a cosine decay down to finalRatio of the peak.
import { checkInteger, rangeError, typeError } from '../errors';
import { integer, number, oneOf, resolve } from '../schema';

export interface LrSchedule {
  baseLr: number;
  batchSize: number;
  totalSteps: number;
  warmupSteps: number;
  /** Where the cosine ends, as a fraction of the peak (1/1000 in the paper): the last step's lr with update 'step'. */
  finalRatio: number;
  /**
   * How often the lr changes: 'step' (the default) follows the cosine every step, reaching finalRatio at the last;
   * 'epoch' holds it for each epoch of `stepsPerEpoch` steps at the cosine of epoch/epochs, as VISSL's
   * `update_interval: epoch` (its PIRL config's); its warm-up and run are then whole epochs.
   */
  update?: LrUpdate;
  stepsPerEpoch?: number;
}

export const LR_UPDATES = ['step', 'epoch'] as const;
export type LrUpdate = (typeof LR_UPDATES)[number];

// Exported, so checked as given: a string step once made '3' + 1 = '31' (an lr 3.1× the peak).
const SCHEDULE = {
  baseLr: number({ min: 0 }),
  batchSize: integer({ min: 1 }),
  totalSteps: integer({ min: 0 }),
  warmupSteps: integer({ min: 0 }),
  finalRatio: number({ min: 0, max: 1 }),
  update: oneOf(LR_UPDATES),
  stepsPerEpoch: integer({ min: 1 }),
};

function checkSchedule(s: LrSchedule): Required<LrSchedule> {
  const c = resolve(SCHEDULE, { ...s, update: s?.update ?? 'step', stepsPerEpoch: s?.stepsPerEpoch ?? 1 }, s, 'schedule', false) as Required<LrSchedule>;
  if (c.update === 'epoch') {
    if (s.stepsPerEpoch === undefined) throw typeError('schedule.stepsPerEpoch', "an integer >= 1 with update 'epoch'", undefined);
    for (const key of ['totalSteps', 'warmupSteps'] as const) {
      if (c[key] % c.stepsPerEpoch !== 0) throw rangeError(`schedule.${key}`, `whole epochs of ${c.stepsPerEpoch} steps (stepsPerEpoch) with update 'epoch'`, c[key]);
    }
  }
  return c;
}

export function peakLr(schedule: LrSchedule): number {
  return peakOf(checkSchedule(schedule));
}

const peakOf = (s: LrSchedule) => (s.baseLr * s.batchSize) / 256;

/** The lr of step `step` (0-based). */
export function lrAt(schedule: LrSchedule, step: number): number {
  const lrOf = lrOfSteps(schedule);
  return lrOf(checkInteger('step', step, 0));
}

/** The lr of each step of `schedule`, the schedule checked once: a run's loop asks it every step. */
export function lrOfSteps(schedule: LrSchedule): (step: number) => number {
  const s = checkSchedule(schedule);
  const peak = peakOf(s);
  const floor = peak * s.finalRatio;
  const cosine = (progress: number) => floor + (peak - floor) * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, progress)));
  const [warmup, span] = [s.warmupSteps, Math.max(1, s.totalSteps - s.warmupSteps - 1)];
  // A linear warm-up to the peak at its last step, then the cosine, at the floor on the last step.
  if (s.update === 'step') return (step) => (step < warmup ? (peak * (step + 1)) / warmup : cosine((step - warmup) / span));
  // VISSL's per-epoch cosine (ClassyVision's, at where = epoch/epochs), its last epoch above the floor; a warm-up
  // epoch e of W at (e+1)/(W+1) of the peak, which the first epoch after it reaches.
  const [warmupEpochs, epochs] = [s.warmupSteps / s.stepsPerEpoch, s.totalSteps / s.stepsPerEpoch];
  return (step) => {
    const epoch = Math.floor(step / s.stepsPerEpoch);
    return epoch < warmupEpochs ? (peak * (epoch + 1)) / (warmupEpochs + 1) : cosine((epoch - warmupEpochs) / Math.max(1, epochs - warmupEpochs));
  };
}

/** Said, not refused (a sweep may share a warm-up across lengths): a warm-up as long as the run leaves the lr rising throughout. */
export function warnOfWarmupSpanningRun(warmupEpochs: number, epochs: number): void {
  if (warmupEpochs < epochs) return;
  process.emitWarning(`the lr's warm-up of ${warmupEpochs} epoch(s) (warmupEpochs) spans the whole run of ${epochs}: the lr never reaches its peak, nor decays`,
    { code: 'PIRL_WARMUP_SPANS_RUN' });
}
