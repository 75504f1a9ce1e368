// The keyed draws on the CPU: the values split over ATen's threads.
#include <ATen/Parallel.h>

#include <algorithm>

#include "../negative_streams.h"

namespace pirl::negatives {

void drawCpu(const int64_t* keys, const int64_t* exclude, uint64_t seed, int64_t rows, int64_t k, int64_t bound, int64_t* out) {
  // Grains of ~32K values (~50 µs each) keep the threads' start-up small next to their work.
  at::parallel_for(0, rows * k, 1 << 15, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end;) {
      const int64_t b = i / k, rowEnd = std::min(end, (b + 1) * k);
      const uint64_t stream = keys ? streamOf(seed, keys[b]) : seed;
      for (; i < rowEnd; ++i) out[i] = drawnValue(stream, i - b * k, bound, exclude, b);
    }
  });
}

}  // namespace pirl::negatives
