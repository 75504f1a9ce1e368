// PIRL's learning rate (docs/PIRL.md, "Optimisation"): lr = base·batch/256, a linear warm-up,
// then a cosine decay down to finalRatio of the peak.
import { checkInteger } from '../errors';
import { integer, number, resolve } from '../schema';

export interface LrSchedule {
  baseLr: number;
  batchSize: number;
  totalSteps: number;
  warmupSteps: number;
  /** The last step's lr as a fraction of the peak (1/1000 in the paper). */
  finalRatio: number;
}

// Exported, so checked as given: a string step once made '3' + 1 = '31' (an lr 3.1× the peak).
const SCHEDULE = {
  baseLr: number({ min: 0 }),
  batchSize: integer({ min: 1 }),
  totalSteps: integer({ min: 0 }),
  warmupSteps: integer({ min: 0 }),
  finalRatio: number({ min: 0, max: 1 }),
};

function checkSchedule(s: LrSchedule): LrSchedule {
  return resolve(SCHEDULE, s, s, 'schedule', true);
}

export function peakLr(schedule: LrSchedule): number {
  const s = checkSchedule(schedule);
  return (s.baseLr * s.batchSize) / 256;
}

/** The lr of step `step` (0-based). */
export function lrAt(schedule: LrSchedule, step: number): number {
  const s = checkSchedule(schedule);
  checkInteger('step', step, 0);
  const peak = peakLr(s);
  if (step < s.warmupSteps) return (peak * (step + 1)) / s.warmupSteps;
  const span = Math.max(1, s.totalSteps - s.warmupSteps - 1);
  const progress = Math.min(1, (step - s.warmupSteps) / span);
  const floor = peak * s.finalRatio;
  return floor + (peak - floor) * 0.5 * (1 + Math.cos(Math.PI * progress));
}

/** Said, not refused (a sweep may share a warm-up across lengths): a warm-up as long as the run leaves the lr rising throughout. */
export function warnOfWarmupSpanningRun(warmupEpochs: number, epochs: number): void {
  if (warmupEpochs < epochs) return;
  process.emitWarning(`the lr's warm-up of ${warmupEpochs} epoch(s) (warmupEpochs) spans the whole run of ${epochs}: the lr never reaches its peak, nor decays`,
    { code: 'PIRL_WARMUP_SPANS_RUN' });
}
