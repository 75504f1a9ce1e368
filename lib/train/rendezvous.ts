// Where a CPU rank's Gloo sockets listen when the options left it open (bindAddress null): this host's
// address on the route to the master — the interface its peers reach it by — as found by the kernel.
import * as dgram from 'dgram';
import * as dns from 'dns';
import { isLoopback, type ResolvedDistributedOptions } from '../config';

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
