// `pirl preview`: a PNG of what the sampler makes of the data.
import { DEFAULT_PRESET, LOADER, RUN_DEFAULTS, resolveSamplerConfig, type SamplerPreset } from '../config';
import { Loader } from '../data/loader';
import { writePreview } from '../data/preview';
import { checkInteger } from '../errors';
import { LAYOUT_USAGE, MAX_PIXELS_USAGE, UsageError, asFlags, checkFlag, checkOutsideData, folderSize, openData, outputFile, parseFlags, type Flags } from './args';

// The verb's own options (writePreview is the CLI's alone).
const COUNT = { default: 8, max: 1024 }, EPOCH = 0;

export const PREVIEW_FLAGS: Flags = { values: ['out', 'count', 'preset', 'seed', 'epoch', 'size', 'layout', 'max-pixels'], switches: ['recursive'] };
export const PREVIEW_USAGE = `preview <data> --out FILE     a PNG of samples: each image view, its 9 jigsaw patches in order, and the solved grid
        --count N (${COUNT.default})  --preset small|paper (${DEFAULT_PRESET})  --seed N (${RUN_DEFAULTS.seed})  --epoch N (${EPOCH})  --size N (folders)
        ${LAYOUT_USAGE}
        ${MAX_PIXELS_USAGE}`;

export async function preview(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, PREVIEW_FLAGS, 1, 'preview needs one <data> argument');
  if (typeof values.out !== 'string') throw new UsageError('preview needs --out FILE.png');
  await checkOutsideData('--out', values.out, positionals[0]); // before outputFile makes its folder
  const out = await outputFile(values.out, '.png');
  const sampler = asFlags(values, { preset: 'preset' }, 'config', () => resolveSamplerConfig(values.preset as SamplerPreset | undefined, 'config'));
  const count = checkFlag(values, 'count', COUNT.default, (a, v) => checkInteger(a, v, 1, COUNT.max));
  const seed = checkFlag(values, 'seed', RUN_DEFAULTS.seed, (a, v) => LOADER.seed.resolve(a, v as number, RUN_DEFAULTS.seed, true));
  const epoch = checkFlag(values, 'epoch', EPOCH, (a, v) => checkInteger(a, v, 0));
  const data = await openData(positionals[0], folderSize(values, sampler, positionals[0]), values);
  const loader = new Loader(data, { batchSize: Math.min(count, data.length), seed, config: sampler, dropLast: false }); // every image may be drawn (unreadable ones made up for)
  await writePreview(loader, out, { count, epoch });
  console.log(`wrote ${out}`);
}
