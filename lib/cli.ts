#!/usr/bin/env node
// The `pirl` command line.
import { buildInfo } from './index';

const USAGE = `Usage: pirl <command> [options]

Commands:
  info [--json]   libtorch version and path, CUDA, BLAS, threads, Node-API version, addon path
  help            this text`;

function info(args: string[]): void {
  const b = buildInfo();
  if (args.includes('--json')) {
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

function main(argv: string[]): number {
  const [command, ...args] = argv;
  switch (command) {
    case 'info':
      info(args);
      return 0;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      console.log(USAGE);
      return 0;
    default:
      console.error(`pirl: unknown command '${command}'\n\n${USAGE}`);
      return 2;
  }
}

process.exitCode = main(process.argv.slice(2));
