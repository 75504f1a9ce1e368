#include "knn.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <limits>

#include "../unit_rows.h"
#include "check_finite.h"

namespace pirl::eval {

Neighbours nearestNeighbours(const at::Tensor& features, const at::Tensor& queries, int64_t k, int64_t chunk, const StopFlag* stop) {
  TORCH_CHECK_VALUE(features.dim() == 2 && queries.dim() == 2 && features.size(1) == queries.size(1),
                    "features and queries must be N×F and M×F, got ", features.sizes(), " and ", queries.sizes());
  TORCH_CHECK_VALUE(features.size(0) >= 1, "features must hold at least one row");
  TORCH_CHECK_VALUE(k >= 1 && chunk >= 1, "k and chunk must be positive, got ", k, " and ", chunk);
  checkFinite(features, "features");
  checkFinite(queries, "queries");
  const int64_t kk = std::min(k, features.size(0));
  const auto unit = [](const at::Tensor& x) {
    // Each row over its largest magnitude first: the norm of rows at 1e-20 or 1e25 under- or overflowed float32.
    const at::Tensor largest = x.norm(std::numeric_limits<double>::infinity(), 1, true);
    const at::Tensor f = (x / largest.masked_fill(largest == 0, 1)).to(at::kFloat);
    return unitRows(f);
  };
  const at::Tensor a = unit(features), b = unit(queries);
  Neighbours out{at::empty({queries.size(0), kk}, at::kFloat), at::empty({queries.size(0), kk}, at::kLong)};
  for (int64_t begin = 0; begin < queries.size(0); begin += chunk) {
    stopIfRequested(stop, "the kNN search");
    const int64_t n = std::min(chunk, queries.size(0) - begin);
    const auto [values, index] = at::topk(at::matmul(b.narrow(0, begin, n), a.t()), kk, 1);
    out.similarity.narrow(0, begin, n).copy_(values.clamp(-1, 1));  // rounding put an image's own at 1.0000004
    out.index.narrow(0, begin, n).copy_(index);
  }
  return out;
}

at::Tensor knnPredict(const at::Tensor& train, const at::Tensor& trainLabels, const at::Tensor& test, int64_t k,
                      double tau, int64_t numClasses, int64_t chunk, const StopFlag* stop) {
  TORCH_CHECK_VALUE(trainLabels.dim() == 1 && trainLabels.size(0) == train.size(0), "trainLabels must hold ",
                    train.size(0), " labels, got ", trainLabels.sizes());
  TORCH_CHECK_TYPE(trainLabels.scalar_type() == at::kLong, "trainLabels must be int64");
  TORCH_CHECK_VALUE(tau > 0 && numClasses >= 1, "tau and numClasses must be positive");
  if (trainLabels.numel() > 0) {
    TORCH_CHECK_INDEX(trainLabels.min().item<int64_t>() >= 0 && trainLabels.max().item<int64_t>() < numClasses,
                      "trainLabels must be in [0, ", numClasses, ")");
  }
  const Neighbours nn = nearestNeighbours(train, test, k, chunk, stop);
  // e^{(s - s_best)/τ}: the same vote over a common factor, where e^{s/τ} overflowed float32 above s/τ = 88.7 (τ ≲ 0.011).
  const at::Tensor similarity = nn.similarity.to(at::kDouble);
  const at::Tensor weights = ((similarity - similarity.narrow(1, 0, 1)) / tau).exp();
  // The neighbours come back on the CPU, whatever device the features are on: the labels join them there.
  const at::Tensor votedFor = trainLabels.to(at::kCPU).index({nn.index});
  // Votes of a few queries at a time: all at once, 10^4 queries over 10^6 classes took 80 GB.
  const int64_t rows = std::max<int64_t>(1, (int64_t{1} << 25) / numClasses);
  at::Tensor predicted = at::empty({test.size(0)}, at::kLong);
  for (int64_t begin = 0; begin < test.size(0); begin += rows) {
    const int64_t n = std::min(rows, test.size(0) - begin);
    predicted.narrow(0, begin, n)
        .copy_(at::zeros({n, numClasses}, at::kDouble)
                   .scatter_add_(1, votedFor.narrow(0, begin, n), weights.narrow(0, begin, n))
                   .argmax(1));
  }
  return predicted;
}

}  // namespace pirl::eval
