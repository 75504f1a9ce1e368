// The keyed draws on a GPU: one thread per value, on the current stream (no host work, no copy).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "../negative_streams.h"

namespace pirl::negatives {

namespace {

__global__ void drawKernel(const int64_t* __restrict__ keys, const int64_t* __restrict__ exclude, uint64_t seed, int64_t k, int64_t total, int64_t bound,
                           int64_t* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / k;
    out[i] = drawnValue(keys ? streamOf(seed, keys[b]) : seed, i - b * k, bound, exclude, b);
  }
}

}  // namespace

void drawCuda(const int64_t* keys, const int64_t* exclude, uint64_t seed, int64_t rows, int64_t k, int64_t bound,
              int64_t* out) {
  constexpr int kThreads = 256;
  const int64_t total = rows * k;
  // Enough blocks to fill any current GPU several times over; the grid-stride loop covers the rest.
  const int blocks = static_cast<int>(std::min<int64_t>((total + kThreads - 1) / kThreads, 65536));
  drawKernel<<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(keys, exclude, seed, k, total, bound, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace pirl::negatives
