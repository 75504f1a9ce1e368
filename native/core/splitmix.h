// splitmix64: spreads nearby integers (seeds, steps, indices) over unrelated 64-bit values, to seed
// independent random streams from them.
#pragma once

#include <cstdint>

namespace pirl {

inline uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace pirl
