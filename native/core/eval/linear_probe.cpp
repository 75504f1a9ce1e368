#include "linear_probe.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "check_finite.h"

namespace pirl::eval {

LinearClassifier trainLinearProbe(const at::Tensor& train, const at::Tensor& trainLabels, int64_t numClasses,
                                  const LinearProbeOptions& o) {
  TORCH_CHECK_VALUE(train.dim() == 2 && train.size(0) >= 1, "train features must be N×F with N >= 1, got ", train.sizes());
  TORCH_CHECK_VALUE(trainLabels.sizes() == at::IntArrayRef{train.size(0)}, "one label per feature row: ", train.size(0),
                    " rows, got labels ", trainLabels.sizes());
  TORCH_CHECK_VALUE(numClasses >= 1, "numClasses must be >= 1, got ", numClasses);
  TORCH_CHECK_VALUE(o.epochs >= 1 && o.batchSize >= 1 && o.lr > 0 && o.weightDecay >= 0, "invalid linear probe options");
  // On the CPU, whatever device the features come from: a few small matrices, and one order of batches.
  const at::Tensor x = train.to(at::kCPU, at::kFloat), y = trainLabels.to(at::kCPU, at::kLong);
  checkFinite(x, "features");  // after the cast: 1e300 in float64 is infinity here
  TORCH_CHECK_VALUE(y.min().item<int64_t>() >= 0 && y.max().item<int64_t>() < numClasses, "labels must be in [0, ", numClasses, ")");
  LinearClassifier probe;
  probe.mean = x.mean(0, true);
  // A feature whose spread is only the float32 rounding of its mean (a constant one; or one row, whose unbiased
  // std is NaN) is centred, not scaled: divided by that spread, a change of it at test time was 10^6 deviations.
  const at::Tensor spread = x.size(0) > 1 ? x.std(0, /*unbiased=*/true, /*keepdim=*/true) : at::zeros_like(probe.mean);
  probe.std = spread.masked_fill(spread <= 1e-5 * probe.mean.abs().clamp_min(1), 1);
  const at::Tensor xs = (x - probe.mean) / probe.std;
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
      stopIfRequested(o.stop, "the linear probe's training");
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
    // A diverged probe predicted class 0 for every row (argmax of NaN) without a word: refused, naming the options.
    TORCH_CHECK_VALUE(at::isfinite(w).all().item<bool>() && at::isfinite(b).all().item<bool>(),
                      "the linear probe diverged in epoch ", epoch, " (its weights became NaN or infinity): lower lr (", o.lr,
                      ") or weightDecay (", o.weightDecay, ")");
  }
  probe.weight = w;
  probe.bias = b;
  return probe;
}

at::Tensor predictLinear(const LinearClassifier& probe, const at::Tensor& features) {
  const int64_t f = probe.weight.size(0);
  TORCH_CHECK_VALUE(features.dim() == 2 && features.size(1) == f, "features must be M×", f, " (the probe's width), got ",
                    features.sizes());
  TORCH_CHECK_VALUE(probe.mean.sizes() == at::IntArrayRef({1, f}) && probe.std.sizes() == at::IntArrayRef({1, f}) &&
                        probe.bias.dim() == 1 && probe.bias.size(0) == probe.weight.size(1),
                    "a probe's mean and std are 1×F and its bias C for weight F×C, got ", probe.mean.sizes(), ", ",
                    probe.std.sizes(), ", ", probe.bias.sizes(), " for ", probe.weight.sizes());
  const auto cpu = [](const at::Tensor& t) { return t.to(at::kCPU, at::kFloat); };
  const at::Tensor x = cpu(features);
  checkFinite(x, "features");
  return at::addmm(cpu(probe.bias), (x - cpu(probe.mean)) / cpu(probe.std), cpu(probe.weight)).argmax(1);
}

double linearProbeAccuracy(const at::Tensor& train, const at::Tensor& trainLabels, const at::Tensor& test,
                           const at::Tensor& testLabels, int64_t numClasses, const LinearProbeOptions& o) {
  TORCH_CHECK_VALUE(testLabels.sizes() == at::IntArrayRef{test.size(0)}, "one label per test feature row");
  const at::Tensor predicted = predictLinear(trainLinearProbe(train, trainLabels, numClasses, o), test);
  return predicted.eq(testLabels.to(at::kCPU, at::kLong)).to(at::kDouble).mean().item<double>();
}

}  // namespace pirl::eval
