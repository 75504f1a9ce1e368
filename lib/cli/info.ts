// `pirl info`: what pirl runs on.
import { buildInfo } from '../runtime';
import { parseFlags, type Flags } from './args';

export const INFO_FLAGS: Flags = { values: [], switches: ['json'] };
export const INFO_USAGE = `info [--json]                 libtorch version and path, CUDA, BLAS, threads, Node-API, addon path`;

export function info(args: string[]): void {
  const { values } = parseFlags(args, INFO_FLAGS, 0, 'info takes no arguments');
  const b = buildInfo();
  if (values.json) {
    console.log(JSON.stringify(b, null, 2));
    return;
  }
  const lines = [
    `pirl        ${b.pirlVersion}`,
    `libtorch    ${b.libtorch.version} (${b.libtorch.library}), found by ${b.libtorch.source}`,
    `CUDA        ${b.cuda.compiled ? 'compiled' : 'not compiled'}, ${b.cuda.available ? `${b.cuda.deviceCount} device(s)` : 'no device'}`,
    `distributed ${[b.distributed.gloo && 'Gloo (CPU ranks)', b.distributed.nccl && 'NCCL (GPU ranks)'].filter(Boolean).join(', ') || 'not compiled'}`,
    `BLAS        ${b.blas.kind}${b.blas.library ? ` (${b.blas.library})` : ''}`,
    `threads     ${b.threads.intraOp} intra-op, ${b.threads.interOp} inter-op (${b.threads.backend})`,
    `Node-API    addon ${b.napiVersion.addon}, node ${b.napiVersion.node}`,
    `addon       ${b.addonPath} (${b.addonKind === 'prebuild' ? `prebuild for ${b.libtorch.tag}` : 'built on this machine'})`,
  ];
  console.log(lines.join('\n'));
  if (b.blas.warning) console.warn(`warning: ${b.blas.warning}`);
}
