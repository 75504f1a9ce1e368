#include "jigsaw.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <numeric>

namespace pirl::data {

void checkJigsawGeometry(int64_t jigsawSize, int64_t patchSize) {
  TORCH_CHECK_VALUE(jigsawSize >= kJigsawCells && jigsawSize % kJigsawCells == 0,
                    "jigsawSize must be a multiple of 3, got ", jigsawSize);
  TORCH_CHECK_VALUE(patchSize >= 1 && patchSize <= jigsawSize / kJigsawCells,
                    "patchSize must be in [1, jigsawSize/3 = ", jigsawSize / kJigsawCells, "], got ", patchSize);
}

void cutJigsaw(int64_t jigsawSize, int64_t patchSize, SampleRng& rng,
               const std::function<void(int64_t k, int64_t cell, int64_t x, int64_t y)>& use) {
  const int64_t cell = jigsawSize / kJigsawCells, P = patchSize;
  std::array<int64_t, kJigsawPatches> order;
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng.engine());  // uniform over the 9! orders
  for (int64_t k = 0; k < kJigsawPatches; ++k) {
    const int64_t cellIndex = order[k];
    const int64_t ox = rng.below(cell - P + 1), oy = rng.below(cell - P + 1);
    use(k, cellIndex, (cellIndex % kJigsawCells) * cell + ox, (cellIndex / kJigsawCells) * cell + oy);
  }
}

}  // namespace pirl::data
