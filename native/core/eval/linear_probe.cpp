#include "linear_probe.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>

#include <cmath>

namespace pirl::eval {

double linearProbeAccuracy(const at::Tensor& train, const at::Tensor& trainLabels, const at::Tensor& test,
                           const at::Tensor& testLabels, int64_t numClasses, const LinearProbeOptions& o) {
  TORCH_CHECK_VALUE(train.dim() == 2 && test.dim() == 2 && train.size(1) == test.size(1) && train.size(0) >= 1,
                    "train and test features must be N×F and M×F, got ", train.sizes(), " and ", test.sizes());
  TORCH_CHECK_VALUE(trainLabels.sizes() == at::IntArrayRef{train.size(0)} && testLabels.sizes() == at::IntArrayRef{test.size(0)},
                    "one label per feature row");
  TORCH_CHECK_VALUE(o.epochs >= 1 && o.batchSize >= 1 && o.lr > 0 && o.weightDecay >= 0, "invalid linear probe options");
  // On the CPU, whatever device the features come from: a few small matrices, and one order of batches.
  const at::Tensor x = train.to(at::kCPU, at::kFloat), y = trainLabels.to(at::kCPU, at::kLong);
  const at::Tensor mean = x.mean(0, true), std = x.std(0, /*unbiased=*/true, /*keepdim=*/true).clamp_min(1e-6);
  const at::Tensor xs = (x - mean) / std;
  const int64_t n = xs.size(0), f = xs.size(1);
  // Weights and biases, trained by hand-written SGD with momentum on the softmax cross-entropy.
  at::Tensor w = at::zeros({f, numClasses}), b = at::zeros({numClasses});
  at::Tensor vw = at::zeros_like(w), vb = at::zeros_like(b);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  const int64_t steps = o.epochs * ((n + o.batchSize - 1) / o.batchSize);
  int64_t step = 0;
  for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
    const at::Tensor order = at::randperm(n, gen, at::kLong);
    for (int64_t begin = 0; begin < n; begin += o.batchSize, ++step) {
      const at::Tensor idx = order.narrow(0, begin, std::min(o.batchSize, n - begin));
      const at::Tensor xb = xs.index_select(0, idx), yb = y.index_select(0, idx);
      at::Tensor p = at::softmax(at::addmm(b, xb, w), 1);
      p.scatter_add_(1, yb.unsqueeze(1), at::full({yb.size(0), 1}, -1.0f));  // p − onehot
      p.div_(static_cast<double>(yb.size(0)));
      const at::Tensor gw = at::matmul(xb.t(), p) + o.weightDecay * w, gb = p.sum(0);
      const double lr = 0.5 * o.lr * (1 + std::cos(M_PI * static_cast<double>(step) / steps));
      vw.mul_(0.9).add_(gw);
      vb.mul_(0.9).add_(gb);
      w.sub_(vw, lr);
      b.sub_(vb, lr);
    }
  }
  const at::Tensor predicted = at::addmm(b, (test.to(at::kCPU, at::kFloat) - mean) / std, w).argmax(1);
  return predicted.eq(testLabels.to(at::kCPU, at::kLong)).to(at::kDouble).mean().item<double>();
}

}  // namespace pirl::eval
