// How a rank joins its peers (docs/distributed.md): what they must agree on, the address its Gloo sockets
// listen on, and word to the others when it cannot start.
import * as dgram from 'dgram';
import * as dns from 'dns';
import { binding, type CommunicatorOptions, type Term, type TrainerHandle } from '../binding';
import { isLoopback, type Device, type ResolvedDistributedOptions, type ResolvedTrainConfig } from '../config';
import type { DataDigest } from '../data/digest';
import { nativeCall } from '../errors';
import { PIRL_VERSION } from '../runtime';

const SAME_COMMAND = 'every rank must run the same command, with the same options';
const SAME_DATA = 'every rank must train on the same data: the same folder, or an identical copy on each host';

/**
 * What the ranks of a run must share: pirl, the world size, every option of the config, the data set
 * (its size, labels and files) and the step it starts from. Ranks that differ in any would train on
 * overlapping shards, with other schedules, or fail in a collective of tensors of other sizes.
 */
export function runTerms(config: ResolvedTrainConfig, data: DataDigest, step: number, worldSize: number): Term[] {
  return [
    { name: 'the pirl version', value: PIRL_VERSION, hint: 'every rank must run the same pirl' },
    { name: 'the world size', value: String(worldSize), hint: 'every rank must be started with the same WORLD_SIZE' },
    // Before the options: a host that cannot see the checkpoint starts anew with the defaults, and this says why.
    {
      name: 'the step of the run to start from', value: String(step),
      hint: 'every rank must resume from the same checkpoint (on a file system all hosts reach), or all start anew',
    },
    ...leaves('config', config).map(([name, value]) => ({ name, value, hint: SAME_COMMAND })),
    { name: "the data set's size", value: String(data.size), hint: SAME_DATA },
    { name: "the data set's labels", value: data.labels, hint: SAME_DATA },
    { name: "the data set's files", value: data.files, hint: SAME_DATA },
    { name: "the data set's stored images", value: String(data.images), hint: SAME_DATA },
  ];
}

// Each option's dotted name and its value as JSON, in the config's order.
function leaves(prefix: string, value: unknown): Array<[string, string]> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return [[prefix, JSON.stringify(value)]];
  return Object.entries(value).flatMap(([k, v]) => leaves(`${prefix}.${k}`, v));
}

function communicatorOptions(d: ResolvedDistributedOptions, device: Device, bindAddress: string, terms: Term[]): CommunicatorOptions {
  return {
    storeFile: d.storeFile ?? '', masterAddr: d.masterAddr, masterPort: d.masterPort, rank: d.rank, worldSize: d.worldSize,
    bindAddress, bindInterface: d.bindInterface ?? '', launcherStore: d.launcherStore, restartCount: d.restartCount,
    timeoutMs: d.timeoutMs, device, terms,
  };
}

/**
 * Runs this rank's work before it joins the others (`d`; null alone) and, should that fail, tells them
 * before rethrowing: they fail when joining with its error, rather than wait for it until the timeout.
 * Not for work after the join (the others learn of a failure there by their next collective failing).
 */
export async function beforeJoining<T>(d: ResolvedDistributedOptions | null, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (e) {
    if (d !== null && d.worldSize > 1) {
      const why = e instanceof Error ? e.message : String(e);
      // Said at once only when the others are slow to come (the error itself follows once they have heard).
      const slow = setTimeout(() => process.emitWarning(`rank ${d.rank} of ${d.worldSize} cannot start; telling the other ranks as they come ` +
        `to join (up to ${d.timeoutMs} ms): ${why}`, { code: 'PIRL_RANK_CANNOT_START' }), 3000);
      // Its own error is the one to report, whatever telling the others did.
      await nativeCall(() => binding.failToJoin(communicatorOptions(d, 'cpu', '', []), why)).catch(() => undefined).finally(() => clearTimeout(slow));
    }
    throw e;
  }
}

// How long a rank waits for the others before it says so.
const WAITING_NOTICE_MS = 5_000;

/** Joins the group of `d` with `terms` to agree on, and takes rank 0's state into `handle` (TrainerHandle.distribute). */
export async function joinGroup(handle: TrainerHandle, d: ResolvedDistributedOptions, device: Device, terms: Term[], syncBatchNorm: boolean): Promise<void> {
  // Gloo's address (CPU ranks; NCCL picks its own interfaces). Not told to the others when it fails: the master is
  // then unreachable from here, and so is the store.
  const bindAddress = device === 'cpu' ? await gatherBindAddress(d) : '';
  // A rank waits for the others in silence otherwise (up to the timeout: 30 minutes by default).
  const where = d.storeFile ? `the store file ${d.storeFile}` : `${d.masterAddr}:${d.masterPort}`;
  const waiting = setTimeout(() => process.emitWarning(`rank ${d.rank} of ${d.worldSize} is waiting for the other ranks at ${where} ` +
    `(up to ${d.timeoutMs} ms: PIRL_DIST_TIMEOUT_MS)`, { code: 'PIRL_WAITING_FOR_RANKS' }), WAITING_NOTICE_MS).unref();
  try {
    await nativeCall(() => handle.distribute(communicatorOptions(d, device, bindAddress, terms), syncBatchNorm));
  } finally {
    clearTimeout(waiting);
  }
}

/** The address Gloo binds to ('' = this host's name, c10d's default), for options whose bindAddress is null. */
export async function gatherBindAddress(d: ResolvedDistributedOptions): Promise<string> {
  if (d.bindAddress !== null || d.bindInterface !== null) return d.bindAddress ?? '';
  // A loopback master seen from a rank on another host's side is rank 0's own (Kubeflow gives the master pod
  // MASTER_ADDR=localhost): the peers reach it by its name.
  if (isLoopback(d.masterAddr)) return '';
  const address = await routeSource(d.masterAddr, d.masterPort);
  // A master name that resolves to loopback here (Debian's /etc/hosts) is fine while every rank is local.
  if (isLoopback(address) && d.localWorldSize !== null && d.localWorldSize < d.worldSize) {
    throw new Error(`distributed training: MASTER_ADDR '${d.masterAddr}' is ${address} on this host (rank ${d.rank}), so ranks ` +
      `on other hosts (LOCAL_WORLD_SIZE ${d.localWorldSize} of WORLD_SIZE ${d.worldSize}) could not reach it: ` +
      "give MASTER_ADDR as this host's network address, or choose the interface with GLOO_SOCKET_IFNAME (or the address with PIRL_BIND_ADDRESS)");
  }
  return address;
}

// The kernel's source address for datagrams to host:port: connect() on UDP sends nothing.
async function routeSource(host: string, port: number): Promise<string> {
  const { address, family } = await dns.promises.lookup(host).catch((e: Error) => {
    throw new Error(`distributed training: MASTER_ADDR '${host}' does not resolve on this host: ${e.message}`);
  });
  const socket = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.connect(port, address, () => resolve());
    });
    return socket.address().address;
  } catch (e) {
    throw new Error(`distributed training: no route from this host to MASTER_ADDR '${host}' (${address}): ${(e as Error).message}`);
  } finally {
    socket.close();
  }
}
