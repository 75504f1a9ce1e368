#include "knn.h"

#include <c10/util/Exception.h>

#include <algorithm>

namespace pirl::eval {

at::Tensor knnPredict(const at::Tensor& train, const at::Tensor& trainLabels, const at::Tensor& test, int64_t k,
                      double tau, int64_t numClasses, int64_t chunk) {
  TORCH_CHECK_VALUE(train.dim() == 2 && test.dim() == 2 && train.size(1) == test.size(1),
                    "train and test features must be N×F and M×F, got ", train.sizes(), " and ", test.sizes());
  TORCH_CHECK_VALUE(trainLabels.dim() == 1 && trainLabels.size(0) == train.size(0), "trainLabels must hold ",
                    train.size(0), " labels, got ", trainLabels.sizes());
  TORCH_CHECK_TYPE(trainLabels.scalar_type() == at::kLong, "trainLabels must be int64");
  TORCH_CHECK_VALUE(k >= 1 && tau > 0 && numClasses >= 1 && chunk >= 1, "k, tau, numClasses and chunk must be positive");
  if (trainLabels.numel() > 0) {
    TORCH_CHECK_INDEX(trainLabels.min().item<int64_t>() >= 0 && trainLabels.max().item<int64_t>() < numClasses,
                      "trainLabels must be in [0, ", numClasses, ")");
  }
  const int64_t kk = std::min(k, train.size(0));
  const at::Tensor a = train.to(at::kFloat) / train.to(at::kFloat).norm(2, 1, true).clamp_min(1e-12);
  const at::Tensor b = test.to(at::kFloat) / test.to(at::kFloat).norm(2, 1, true).clamp_min(1e-12);
  at::Tensor predictions = at::empty({test.size(0)}, at::kLong);
  for (int64_t begin = 0; begin < test.size(0); begin += chunk) {
    const int64_t n = std::min(chunk, test.size(0) - begin);
    const at::Tensor similarity = at::matmul(b.narrow(0, begin, n), a.t());  // n×N
    const auto [values, index] = at::topk(similarity, kk, 1);
    const at::Tensor weights = (values / tau).exp();
    const at::Tensor votes = at::zeros({n, numClasses}, at::kFloat).scatter_add_(1, trainLabels.index({index}), weights);
    predictions.narrow(0, begin, n).copy_(votes.argmax(1));
  }
  return predictions;
}

}  // namespace pirl::eval
