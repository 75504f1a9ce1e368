// splitmix64: spreads nearby integers (seeds, steps, indices) over unrelated 64-bit values, to seed
// independent random streams from them; usable in CUDA kernels too.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define PIRL_HOST_DEVICE __host__ __device__
#else
#define PIRL_HOST_DEVICE
#endif

namespace pirl {

constexpr uint64_t kSplitmixGamma = 0x9e3779b97f4a7c15ULL;

PIRL_HOST_DEVICE inline uint64_t splitmix64(uint64_t z) {
  z += kSplitmixGamma;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace pirl
