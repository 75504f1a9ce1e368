#include "batch_norm.h"

#include <ATen/Context.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/custom_function.h>

namespace pirl::model {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Every dimension but the channels'.
std::vector<int64_t> reducedDims(const at::Tensor& x) {
  std::vector<int64_t> dims{0};
  for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  return dims;
}

// A per-channel C-vector shaped to broadcast against x.
at::Tensor perChannel(const at::Tensor& v, const at::Tensor& x) {
  std::vector<int64_t> shape(x.dim(), 1);
  shape[1] = v.size(0);
  return v.view(shape);
}

struct SumHolder : torch::CustomClassHolder {
  explicit SumHolder(SumAcrossRanks s) : sum(std::move(s)) {}
  SumAcrossRanks sum;
};

struct SyncBatchNormFunction : torch::autograd::Function<SyncBatchNormFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                            at::Tensor runningMean, at::Tensor runningVar, double momentum, double eps,
                            const SumAcrossRanks* sum) {
    const int64_t C = x.size(1);
    const std::vector<int64_t> dims = reducedDims(x);
    const at::ScalarType acc = at::promote_types(x.scalar_type(), at::kFloat);  // half and bf16 compute in fp32
    const at::Tensor xf = x.to(acc);
    const double count = static_cast<double>(x.numel() / C);
    const at::Tensor localMean = xf.mean(dims);
    const at::Tensor localM2 = (xf - perChannel(localMean, x)).square().sum(dims).to(at::kDouble);
    // Σx and Σx² per channel in double, from this rank's mean and squared deviations (Chan et al.): sums
    // combine across ranks, and the double keeps Σx² − n·mean² from cancelling.
    const at::Tensor m = localMean.to(at::kDouble);
    at::Tensor stats = at::cat({m * count, localM2 + m.square() * count, at::full({1}, count, m.options())});
    (*sum)(stats);
    const at::Tensor n = stats.narrow(0, 2 * C, 1);
    const at::Tensor mean = stats.narrow(0, 0, C) / n;
    const at::Tensor var = (stats.narrow(0, C, C) / n - mean.square()).clamp_min(0);  // biased: normalises
    const at::Tensor meanF = mean.to(acc), invstd = (var + eps).rsqrt().to(acc);
    if (momentum != 0) {
      runningMean.mul_(1 - momentum).add_(mean.to(runningMean.scalar_type()) * momentum);
      runningVar.mul_(1 - momentum).add_((var * n / (n - 1)).to(runningVar.scalar_type()) * momentum);  // unbiased: estimates
    }
    ctx->save_for_backward({x, weight, meanF, invstd, n.to(acc)});
    ctx->saved_data["sum"] = c10::IValue::make_capsule(c10::make_intrusive<SumHolder>(*sum));
    return (xf - perChannel(meanF, x)).mul_(perChannel(invstd * weight, x)).add_(perChannel(bias, x)).to(x.scalar_type());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &mean = saved[2], &invstd = saved[3], &n = saved[4];
    const auto holder = c10::static_intrusive_pointer_cast<SumHolder>(ctx->saved_data["sum"].toCapsule());
    const int64_t C = x.size(1);
    const std::vector<int64_t> dims = reducedDims(x);
    const at::Tensor dy = grads[0].to(mean.scalar_type());
    const at::Tensor xhat = (x.to(mean.scalar_type()) - perChannel(mean, x)).mul_(perChannel(invstd, x));
    const at::Tensor sumDy = dy.sum(dims), sumDyXhat = (dy * xhat).sum(dims);
    // x's gradient sees every rank's loss through the shared mean and variance: their sums over all ranks.
    at::Tensor global = at::cat({sumDy, sumDyXhat}).to(at::kDouble);
    holder->sum(global);
    const at::Tensor meanDy = (global.narrow(0, 0, C) / n).to(mean.scalar_type());
    const at::Tensor meanDyXhat = (global.narrow(0, C, C) / n).to(mean.scalar_type());
    const at::Tensor dx = (dy - perChannel(meanDy, x) - xhat * perChannel(meanDyXhat, x)).mul_(perChannel(invstd * weight, x));
    return {dx.to(x.scalar_type()), sumDyXhat, sumDy, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor syncBatchNorm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, at::Tensor& runningMean,
                         at::Tensor& runningVar, double momentum, double eps, const SumAcrossRanks& sum) {
  TORCH_CHECK_VALUE(x.dim() >= 2 && weight.dim() == 1 && x.size(1) == weight.size(0),
                    "syncBatchNorm: x must be N×C×… with C = ", weight.numel(), " channels, got ", x.sizes());
  TORCH_CHECK_VALUE(sum != nullptr, "syncBatchNorm needs a sum across ranks");
  return SyncBatchNormFunction::apply(x, weight, bias, runningMean, runningVar, momentum, eps, &sum);
}

BatchNormImpl::BatchNormImpl(int64_t features) : features(features) { reset(); }

void BatchNormImpl::reset() {
  weight = register_parameter("weight", at::ones({features}));
  bias = register_parameter("bias", at::zeros({features}));
  running_mean = register_buffer("running_mean", at::zeros({features}));
  running_var = register_buffer("running_var", at::ones({features}));
  num_batches_tracked = register_buffer("num_batches_tracked", at::zeros({}, at::kLong));
}

at::Tensor BatchNormImpl::forward(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.dim() == 4 && x.size(1) == features, "BatchNorm: expected N×", features, "×H×W, got ", x.sizes());
  if (!is_training()) {
    return at::batch_norm(x, weight, bias, running_mean, running_var, false, 0.0, eps, at::globalContext().userEnabledCuDNN());
  }
  TORCH_CHECK_VALUE(x.numel() > features, "BatchNorm: expected more than one value per channel when training, got ",
                    x.sizes(), ": a batch of one image whose maps shrink to 1×1 has no statistics to normalise by; train on "
                    "batches of 2 or more (or larger images)");
  const bool cudnn = at::globalContext().userEnabledCuDNN();
  if (runningFrozen) {
    if (sumAcrossRanks) return syncBatchNorm(x, weight, bias, running_mean, running_var, 0.0, eps, sumAcrossRanks);
    return at::batch_norm(x, weight, bias, at::Tensor(), at::Tensor(), true, 0.0, eps, cudnn);
  }
  num_batches_tracked += 1;  // counted on the device as torch.nn.BatchNorm counts it: no host read per step
  if (sumAcrossRanks) return syncBatchNorm(x, weight, bias, running_mean, running_var, momentum, eps, sumAcrossRanks);
  return at::batch_norm(x, weight, bias, running_mean, running_var, true, momentum, eps, cudnn);
}

}  // namespace pirl::model
