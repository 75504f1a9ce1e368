// libuv's pool runs sharp's decodes and every native call (a training step, the sampler's batches);
// its default of 4 threads would leave JPEG decoding a core or two on a many-core GPU host. Sized
// here, imported first, because libuv reads UV_THREADPOOL_SIZE once, at the pool's first use.
import * as os from 'os';

if (!process.env.UV_THREADPOOL_SIZE) {
  process.env.UV_THREADPOOL_SIZE = String(Math.min(1024, Math.max(4, os.availableParallelism() + 2)));
}
