// libuv's pool, where sharp decodes images, sized before anything starts it (it starts at its first use, and its size
// is read then). Plain JS with no dependencies: the `pirl` command runs it before requiring sharp.
'use strict';
const os = require('os');

// A step and the loader's batches each hold a pool thread while their own threads work: the cores + 2. At 4 threads
// (libuv's default) a JPEG folder decoded 4 images at a time whatever the cores (267 samples/s on the 16-core GPU host).
function sizeThreadPool() {
  if (!process.env.UV_THREADPOOL_SIZE) {  // unset or empty (libuv reads an empty one as 1 thread)
    process.env.UV_THREADPOOL_SIZE = String(Math.max(4, Math.min(1024, os.availableParallelism() + 2)));
  }
}

module.exports = { sizeThreadPool };
