// The random stream of one sample: a function of (seed, epoch, index) alone, so a batch is the
// same whatever the thread count or the order its samples are made in.
#pragma once

#include <cstdint>
#include <random>

namespace pirl::data {

class SampleRng {
 public:
  SampleRng(uint64_t seed, uint64_t epoch, uint64_t index) : engine_(mix(mix(mix(seed) ^ epoch) ^ index)) {}

  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(engine_); }
  bool bernoulli(double p) { return uniform(0, 1) < p; }
  // Uniform integer in [0, n).
  int64_t below(int64_t n) { return std::uniform_int_distribution<int64_t>(0, n - 1)(engine_); }
  std::mt19937_64& engine() { return engine_; }

 private:
  // splitmix64: spreads nearby (seed, epoch, index) triples over unrelated engine states.
  static uint64_t mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  std::mt19937_64 engine_;
};

}  // namespace pirl::data
