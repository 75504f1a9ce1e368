// The sizes and augmentation strengths of PIRL's two views (shared/PIRL.md, "Data").
import type { NativeSamplerConfig } from '../binding';
import { checkInteger, rangeError, typeError } from '../errors';

export type SamplerPreset = 'paper' | 'small';
export type SamplerConfig = NativeSamplerConfig;

/** paper: 224 / 255 / 64; small (28–96 px data sets): 32 / 36 / 9 — the paper's ratios. */
export const PRESETS: Readonly<Record<SamplerPreset, SamplerConfig>> = Object.freeze({
  paper: {
    imageSize: 224, jigsawSize: 255, patchSize: 64,
    imageScaleMin: 0.08, imageScaleMax: 1, jigsawScaleMin: 0.6, jigsawScaleMax: 1,
    brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.2,
    photometricProbability: 0.66, grayscaleProbability: 0.2, flipProbability: 0.5,
  },
  small: {
    imageSize: 32, jigsawSize: 36, patchSize: 9,
    imageScaleMin: 0.08, imageScaleMax: 1, jigsawScaleMin: 0.6, jigsawScaleMax: 1,
    brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.2,
    photometricProbability: 0.66, grayscaleProbability: 0.2, flipProbability: 0.5,
  },
});

const UNIT_KEYS = ['imageScaleMin', 'imageScaleMax', 'jigsawScaleMin', 'jigsawScaleMax', 'photometricProbability',
  'grayscaleProbability', 'flipProbability', 'brightness', 'contrast', 'saturation'] as const;

/** A full, checked config from a preset name or a preset plus overrides. */
export function resolveSamplerConfig(config: SamplerPreset | (Partial<SamplerConfig> & { preset?: SamplerPreset }) = 'small'): SamplerConfig {
  const spec = typeof config === 'string' ? { preset: config } : config;
  if (typeof spec !== 'object' || spec === null) throw typeError('config', "'paper', 'small' or an object", config);
  const { preset = 'small', ...overrides } = spec;
  if (!(preset in PRESETS)) throw typeError('config.preset', "'paper' or 'small'", preset);
  for (const key of Object.keys(overrides)) {
    if (!(key in PRESETS.small)) throw typeError('config', `keys among ${Object.keys(PRESETS.small).join(', ')}`, key);
  }
  const c: SamplerConfig = { ...PRESETS[preset], ...overrides };
  c.imageSize = checkInteger('config.imageSize', c.imageSize, 1);
  c.jigsawSize = checkInteger('config.jigsawSize', c.jigsawSize, 3);
  if (c.jigsawSize % 3 !== 0) throw rangeError('config.jigsawSize', 'a multiple of 3', c.jigsawSize);
  c.patchSize = checkInteger('config.patchSize', c.patchSize, 1);
  if (c.patchSize > c.jigsawSize / 3) throw rangeError('config.patchSize', `at most jigsawSize/3 = ${c.jigsawSize / 3}`, c.patchSize);
  for (const key of UNIT_KEYS) {
    const v = c[key];
    if (typeof v !== 'number' || !(v >= 0 && v <= 1)) throw rangeError(`config.${key}`, 'a number in [0, 1]', v);
  }
  if (typeof c.hue !== 'number' || !(c.hue >= 0 && c.hue <= 0.5)) throw rangeError('config.hue', 'a number in [0, 0.5]', c.hue);
  if (!(c.imageScaleMin > 0 && c.imageScaleMin <= c.imageScaleMax)) throw rangeError('config.imageScaleMin', `in (0, imageScaleMax]`, c.imageScaleMin);
  if (!(c.jigsawScaleMin > 0 && c.jigsawScaleMin <= c.jigsawScaleMax)) throw rangeError('config.jigsawScaleMin', `in (0, jigsawScaleMax]`, c.jigsawScaleMin);
  return c;
}
