// The random stream of one sample: a function of (seed, epoch, index) alone, so a batch is the
// same whatever the thread count or the order its samples are made in.
#pragma once

#include <cstdint>
#include <random>

#include "../splitmix.h"

namespace pirl::data {

class SampleRng {
 public:
  SampleRng(uint64_t seed, uint64_t epoch, uint64_t index) : engine_(splitmix64(splitmix64(splitmix64(seed) ^ epoch) ^ index)) {}

  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(engine_); }
  bool bernoulli(double p) { return uniform(0, 1) < p; }
  // Uniform integer in [0, n).
  int64_t below(int64_t n) { return std::uniform_int_distribution<int64_t>(0, n - 1)(engine_); }
  std::mt19937_64& engine() { return engine_; }

 private:
  std::mt19937_64 engine_;
};

}  // namespace pirl::data
