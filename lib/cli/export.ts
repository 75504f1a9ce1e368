// `pirl export`: the trunk of a saved model under torchvision's names.
import { PirlModel } from '../model';
import { UsageError, outputFile, parseFlags, type Flags } from './args';

export const EXPORT_FLAGS: Flags = { values: ['out'], switches: ['force'] };
export const EXPORT_USAGE = `export <model> --out FILE [--force]  the trunk with torchvision's names (safetensors); --force: --out may replace a model or checkpoint`;

export async function exportTrunk(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, EXPORT_FLAGS, 1, 'export needs <model.safetensors> --out FILE.safetensors');
  if (typeof values.out !== 'string') throw new UsageError('export needs <model.safetensors> --out FILE.safetensors');
  const out = await outputFile(values.out, '.safetensors', { inputs: [positionals[0]], force: values.force === true });
  const model = await PirlModel.load(positionals[0]);
  await model.exportTrunk(out);
  console.log(`wrote the ${model.options.arch} trunk with torchvision's names to ${out}`);
  for (const note of torchvisionNotes(model.options)) console.error(`pirl: note: ${note}`);
}

// What torchvision's own ResNet needs to take this trunk (README "Transfer").
export function torchvisionNotes({ arch, stem, width }: Pick<PirlModel['options'], 'arch' | 'stem' | 'width'>): string[] {
  const notes: string[] = [];
  if (width !== 1) {
    const built = stem === 'small' ? ', and the small stem (a 3×3 stride-1 conv1, no max-pool)' : '';
    notes.push(`width ${width}: torchvision's ${arch} has no such channel counts; its weights load only into a ResNet built with each stage's channels × ${width}${built}`);
  }
  // A recipe for torchvision's ResNet only where the trunk fits one (at another width, its bn1 already does not).
  if (stem === 'small' && width === 1) notes.push(`the small stem: torchvision.models.${arch}() takes it after m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False) and m.maxpool = nn.Identity()`);
  return notes;
}
