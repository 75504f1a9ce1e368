#include "nce_function.h"

#include <torch/csrc/autograd/custom_function.h>

#include <cmath>

#include "../nce_kernels.h"

namespace pirl::nce {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

double logNoise(int64_t K, double z, int64_t numRows) {
  return std::log(static_cast<double>(K) * z / static_cast<double>(numRows));
}

struct Forward {
  at::Tensor loss;    // scalar
  at::Tensor grad;    // d loss / d x, B×D
  at::Tensor zUsed;   // 0-dim double where x is
  at::Tensor zBatch;  // 0-dim double where x is
};

at::Tensor expSum(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& positives, const at::Tensor& negatives,
              double tau) {
#ifdef PIRL_WITH_CUDA
  if (x.is_cuda()) return expSumCuda(x, bank, positives, negatives, tau);
#endif
  TORCH_CHECK_TYPE(x.is_cpu(), "nceLoss: this build has no kernel for ", x.device(), " (CUDA needs a CUDA libtorch)");
  return expSumCpu(x, bank, positives, negatives, tau);
}

FusedResult fused(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& positives,
                  const at::Tensor& negatives, double tau, Mode mode, double noise) {
#ifdef PIRL_WITH_CUDA
  if (x.is_cuda()) return fusedNceCuda(x, bank, positives, negatives, tau, mode, noise);
#endif
  TORCH_CHECK_TYPE(x.is_cpu(), "nceLoss: this build has no kernel for ", x.device(), " (CUDA needs a CUDA libtorch)");
  return fusedNceCpu(x, bank, positives, negatives, tau, mode, noise);
}

// The Z a loss used, a 0-dim double where the scores are: NCE's given one (`z` > 0), else this batch's estimate
// (InfoNCE uses none: its estimate, for information, whatever z was given).
at::Tensor zUsedOf(const Options& o, const at::Tensor& zBatch) {
  return o.mode == Mode::Nce && o.z > 0 ? at::scalar_tensor(o.z, zBatch.options().dtype(at::kDouble)) : zBatch;
}

// Per-sample negatives: the one-pass kernel (two passes on the step that estimates Z).
Forward perSample(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& positives,
                  const at::Tensor& negatives, const Options& o) {
  const int64_t B = x.size(0), K = negatives.size(1), N = bank.size(0);
  const double scores = static_cast<double>(B * (K + 1));
  const bool estimate = o.mode == Mode::Nce && o.z <= 0;
  at::Tensor zEstimate;
  double z = o.z;
  if (estimate) {
    // NCE's first step: the kernel's noise term needs Z on the host, the one read of the device here.
    zEstimate = expSum(x, bank, positives, negatives, o.tau) * static_cast<double>(N) / scores;
    z = zEstimate.item<double>();
  }
  const FusedResult r = fused(x, bank, positives, negatives, o.tau, o.mode, logNoise(K, z, N));
  // The estimating pass computed zBatch exactly; the loss pass derives it from its own terms.
  const at::Tensor zBatch = estimate ? zEstimate : r.expSum * static_cast<double>(N) / scores;
  return {r.rowLoss.mean(), r.grad, zUsedOf(o, zBatch), zBatch};
}

// Shared negatives: the B×(K+1) logits are one matrix product (1/τ folded into x); the loss and dL/ds are
// closed forms on them. Each full pass over the logits costs at paper scale (B=256, K=32,000: 33 MB), so
// there are as few as the maths allows: InfoNCE's Z comes from the row log-sum-exps, the 1/(τB) scales
// the B×D gradient.
Forward shared(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& positives, const at::Tensor& negatives,
               const Options& o) {
  const int64_t B = x.size(0), K = negatives.size(0), N = bank.size(0);
  const double scores = static_cast<double>(B * (K + 1));
  const at::Tensor positiveRows = bank.index_select(0, positives);
  const at::Tensor negativeRows = bank.index_select(0, negatives);
  const at::Tensor xt = x / o.tau;
  const at::Tensor logits = at::cat({(xt * positiveRows).sum(1, true), at::matmul(xt, negativeRows.t())}, 1);
  at::Tensor rows, coef, zBatch;
  if (o.mode == Mode::Nce) {
    // Through the log-sum-exp: e^{s/τ} in float32 overflowed from s/τ = 88.7 (τ = 0.01 and a positive at 0.887).
    zBatch = at::logsumexp(logits.flatten(), 0).to(at::kDouble).exp() * static_cast<double>(N) / scores;
    // Only NCE needs Z, and on the host only when it was not given (the first step).
    const at::Tensor u = logits - logNoise(K, o.z > 0 ? o.z : zBatch.item<double>(), N);
    rows = at::softplus(-u.select(1, 0)) + at::softplus(u.narrow(1, 1, K)).sum(1);
    coef = at::sigmoid(u);
  } else {
    const at::Tensor lse = at::logsumexp(logits, 1);
    zBatch = lse.to(at::kDouble).exp().sum() * static_cast<double>(N) / scores;
    rows = lse - logits.select(1, 0);
    coef = at::softmax(logits, 1);
  }
  coef.select(1, 0).sub_(1);  // d/ds_pos of both losses carries the −1 of the positive term
  const at::Tensor grad = (coef.select(1, 0).unsqueeze(1) * positiveRows + at::matmul(coef.narrow(1, 1, K), negativeRows)) /
                          (o.tau * static_cast<double>(B));
  return {rows.mean(), grad, zUsedOf(o, zBatch), zBatch};
}

struct NceFunction : public torch::autograd::Function<NceFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& bank,
                               const at::Tensor& positives, const at::Tensor& negatives, double tau, int64_t mode,
                               double z) {
    const Options o{tau, static_cast<Mode>(mode), z};
    const at::Tensor xc = x.contiguous();
    const Forward f = negatives.dim() == 1 ? shared(xc, bank, positives, negatives, o)
                                           : perSample(xc, bank, positives, negatives, o);
    // The gradient is known in closed form at forward time: backward only scales it.
    ctx->save_for_backward({f.grad});
    at::Tensor stats = at::stack({f.zUsed, f.zBatch});
    ctx->mark_non_differentiable({stats});
    return {f.loss, stats};
  }

  static variable_list backward(AutogradContext* ctx, variable_list gradOutputs) {
    const at::Tensor grad = ctx->get_saved_variables()[0] * gradOutputs[0];
    return {grad, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

std::vector<at::Tensor> applyNceFunction(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& positives,
                                         const at::Tensor& negatives, const Options& options) {
  return NceFunction::apply(x, bank, positives, negatives, options.tau, static_cast<int64_t>(options.mode), options.z);
}

}  // namespace pirl::nce
