#!/usr/bin/env node
// The `pirl` command line.
import { parseArgs } from 'util';

import { Loader, buildInfo } from './index';
import { TRAIN_USAGE, UsageError, embed, evaluate, exportTrunk, folderSize, integer, openData, train } from './cli/train';
import { writePreview } from './data/preview';

const USAGE = `Usage: pirl <command> [options]

Commands:
  info [--json]                 libtorch version and path, CUDA, BLAS, threads, Node-API, addon path
  ${TRAIN_USAGE}
  eval <model> [--data D] [--test D] [--k 200] [--tau 0.07] [--size 32]
                                weighted kNN top-1 of a saved model's trunk (default data: fashion-mnist)
  embed <model> <folder> --out FILE [--layer res5|f] [--size 32]
                                features of every image, with the file list in the metadata
  export <model> --out FILE     the trunk with torchvision's names (safetensors)
  preview <data> --out FILE     a PNG of samples: each image view and its 9 jigsaw patches in order
        --count N (8)  --preset small|paper (small)  --seed N (0)  --epoch N (0)  --size N (64, folders)
  help                          this text

<data> is a folder of images (flat, or one subfolder per class) or 'fashion-mnist'.`;

function info(args: string[]): void {
  const { values } = parseArgs({ args, options: { json: { type: 'boolean' } } });
  const b = buildInfo();
  if (values.json) {
    console.log(JSON.stringify(b, null, 2));
    return;
  }
  const lines = [
    `pirl        ${b.pirlVersion}`,
    `libtorch    ${b.libtorch.version} (${b.libtorch.library})`,
    `CUDA        ${b.cuda.compiled ? 'compiled' : 'not compiled'}, ${b.cuda.available ? `${b.cuda.deviceCount} device(s)` : 'no device'}`,
    `BLAS        ${b.blas.kind}${b.blas.library ? ` (${b.blas.library})` : ''}`,
    `threads     ${b.threads.intraOp} intra-op, ${b.threads.interOp} inter-op (${b.threads.backend})`,
    `Node-API    addon ${b.napiVersion.addon}, node ${b.napiVersion.node}`,
    `addon       ${b.addonPath}`,
  ];
  console.log(lines.join('\n'));
  if (b.blas.warning) console.warn(`warning: ${b.blas.warning}`);
}

async function preview(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      out: { type: 'string' }, count: { type: 'string' }, preset: { type: 'string' },
      seed: { type: 'string' }, epoch: { type: 'string' }, size: { type: 'string' },
    },
  });
  if (positionals.length !== 1) throw new UsageError('preview needs one <data> argument');
  if (!values.out) throw new UsageError('preview needs --out FILE.png');
  const preset = values.preset ?? 'small';
  if (preset !== 'small' && preset !== 'paper') throw new UsageError(`--preset must be 'small' or 'paper', got '${preset}'`);
  const data = await openData(positionals[0], folderSize(values.size, preset));
  const count = integer('count', values.count, 8);
  const loader = new Loader(data, { batchSize: Math.min(count, data.length), seed: integer('seed', values.seed, 0), config: preset });
  await writePreview(loader, values.out, { count, epoch: integer('epoch', values.epoch, 0) });
  console.log(`wrote ${values.out}`);
}

async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  // `pirl <command> --help` shows the usage, which lists every command's options.
  if (args.includes('--help') || args.includes('-h')) {
    console.log(USAGE);
    return 0;
  }
  try {
    switch (command) {
      case 'info':
        info(args);
        return 0;
      case 'preview':
        await preview(args);
        return 0;
      case 'train':
        await train(args);
        return 0;
      case 'eval':
        await evaluate(args);
        return 0;
      case 'embed':
        await embed(args);
        return 0;
      case 'export':
        await exportTrunk(args);
        return 0;
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        console.log(USAGE);
        return 0;
      default:
        throw new UsageError(`unknown command '${command}'`);
    }
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`pirl: ${(err as Error).message}\n\n${USAGE}`);
      return 2;
    }
    console.error(`pirl: ${(err as Error).message}`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
