// `pirl preview`: a PNG of what the sampler makes of the data.
import { resolveSamplerConfig, type SamplerPreset } from '../config';
import { Loader } from '../data/loader';
import { writePreview } from '../data/preview';
import { checkInteger } from '../errors';
import { LAYOUT_USAGE, MAX_PIXELS_USAGE, UsageError, asFlags, checkFlag, checkOutsideData, folderSize, openData, outputFile, parseFlags } from './args';

export const PREVIEW_USAGE = `preview <data> --out FILE     a PNG of samples: each image view, its 9 jigsaw patches in order, and the solved grid
        --count N (8)  --preset small|paper (small)  --seed N (0)  --epoch N (0)  --size N (folders)
        ${LAYOUT_USAGE}
        ${MAX_PIXELS_USAGE}`;

export async function preview(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, ['out', 'count', 'preset', 'seed', 'epoch', 'size', 'layout', 'max-pixels'], [], 1, 'preview needs one <data> argument');
  if (typeof values.out !== 'string') throw new UsageError('preview needs --out FILE.png');
  await checkOutsideData('--out', values.out, positionals[0]); // before outputFile makes its folder
  const out = await outputFile(values.out, '.png');
  const sampler = asFlags(values, { preset: 'preset' }, 'config', () => resolveSamplerConfig((values.preset ?? 'small') as SamplerPreset, 'config'));
  const count = checkFlag(values, 'count', 8, (a, v) => checkInteger(a, v, 1, 1024));
  const seed = checkFlag(values, 'seed', 0, (a, v) => checkInteger(a, v, 0));
  const epoch = checkFlag(values, 'epoch', 0, (a, v) => checkInteger(a, v, 0));
  const data = await openData(positionals[0], folderSize(values, sampler, positionals[0]), values);
  const loader = new Loader(data, { batchSize: Math.min(count, data.length), seed, config: sampler, dropLast: false }); // every image may be drawn (unreadable ones made up for)
  await writePreview(loader, out, { count, epoch });
  console.log(`wrote ${out}`);
}
