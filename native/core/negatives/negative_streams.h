// Negatives drawn from keyed streams, on the device that holds the memory bank: value j of the stream
// keyed by (seed, key) is a function of those three numbers alone (SplitMix64 used as a counter-based
// generator), so every value is computed independently — in parallel on the CPU, by one CUDA thread
// each on a GPU, the same integers on both — and nothing is drawn on the host and copied over.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "../splitmix.h"

namespace pirl::negatives {

// The stream of one sample: (seed, key) spread over 64 bits.
PIRL_HOST_DEVICE inline uint64_t streamOf(uint64_t seed, int64_t key) {
  return splitmix64(seed ^ splitmix64(static_cast<uint64_t>(key)));
}

// Value j of `stream`, uniform in [0, bound): SplitMix64's j-th output scaled by a 64×64-bit multiply's
// high half (Lemire), whose bias, bound/2⁶⁴ < 1e-12 for any bank, needs no rejection loop.
PIRL_HOST_DEVICE inline int64_t streamValue(uint64_t stream, int64_t j, int64_t bound) {
  const uint64_t r = splitmix64(stream + static_cast<uint64_t>(j) * kSplitmixGamma);
#ifdef __CUDA_ARCH__
  return static_cast<int64_t>(__umul64hi(r, static_cast<uint64_t>(bound)));
#else
  return static_cast<int64_t>((static_cast<unsigned __int128>(r) * static_cast<uint64_t>(bound)) >> 64);
#endif
}

// B×K int64 on `keys`' device: row b is the first K values of the stream (seed, keys[b]) in [0, bound).
// `keys`: B int64, any device. With `exclude` (B int64 in [0, bound), on that device) row b is uniform over
// [0, bound) without exclude[b]: its values are drawn from [0, bound − 1) and step over it.
at::Tensor drawKeyed(const at::Tensor& keys, uint64_t seed, int64_t k, int64_t bound, const at::Tensor& exclude = at::Tensor());
// K int64 on `device`: the first K values of the stream `stream` in [0, bound).
at::Tensor drawStream(uint64_t stream, int64_t k, int64_t bound, c10::Device device);

// Value j of row b as the kernels write it: `exclude` non-null → from [0, bound − 1), stepped over exclude[b].
PIRL_HOST_DEVICE inline int64_t drawnValue(uint64_t stream, int64_t j, int64_t bound, const int64_t* exclude, int64_t b) {
  if (!exclude) return streamValue(stream, j, bound);
  const int64_t v = streamValue(stream, j, bound - 1);
  return v + (v >= exclude[b] ? 1 : 0);
}

// The kernels, writing rows×K values: row b from the stream streamOf(seed, keys[b]), or with `keys` null
// (one row) from the stream `seed` itself.
void drawCpu(const int64_t* keys, const int64_t* exclude, uint64_t seed, int64_t rows, int64_t k, int64_t bound, int64_t* out);
#ifdef PIRL_WITH_CUDA
void drawCuda(const int64_t* keys, const int64_t* exclude, uint64_t seed, int64_t rows, int64_t k, int64_t bound,
              int64_t* out);
#endif

}  // namespace pirl::negatives
