// `pirl export`: the trunk of a saved model under torchvision's names.
import { PirlModel } from '../model';
import { UsageError, outputFile, parseFlags } from './args';

export const EXPORT_USAGE = `export <model> --out FILE     the trunk with torchvision's names (safetensors)`;

export async function exportTrunk(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, ['out'], [], 1, 'export needs <model.safetensors> --out FILE.safetensors');
  if (typeof values.out !== 'string') throw new UsageError('export needs <model.safetensors> --out FILE.safetensors');
  const out = await outputFile(values.out, '.safetensors');
  const model = await PirlModel.load(positionals[0]);
  await model.exportTrunk(out);
  console.log(`wrote the ${model.options.arch} trunk with torchvision's names to ${out}`);
}
