#include "nce_function.h"

#include <torch/csrc/autograd/custom_function.h>

#include <cmath>

#include "../nce_kernels.h"

namespace pirl::nce {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Per-sample negatives have a CPU kernel only so far; shared negatives (matmul) run on any device.
at::Tensor scores(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& index) {
  TORCH_CHECK_TYPE(x.is_cpu(), "nceLoss with per-sample negatives has no CUDA kernel yet; use shared negatives on ",
                   x.device());
  return scoresCpu(x, bank, index);
}

at::Tensor weightedRowSum(const at::Tensor& coef, const at::Tensor& bank, const at::Tensor& index) {
  return weightedRowSumCpu(coef, bank, index);
}

struct LossAndCoef {
  at::Tensor loss;  // scalar
  at::Tensor coef;  // dLoss/dscores, B×(K+1)
  double zUsed;
  double zBatch;
};

// The loss on the B×(K+1) scores (positive in column 0) and its derivative, in closed form.
LossAndCoef lossFromScores(const at::Tensor& s, int64_t numRows, const Options& o) {
  const int64_t B = s.size(0), K = s.size(1) - 1;
  const at::Tensor logits = s / o.tau;
  const double zBatch = static_cast<double>(numRows) * logits.exp().mean(at::kDouble).item<double>();
  const double zUsed = o.z > 0 ? o.z : zBatch;
  at::Tensor rows, coef;
  if (o.mode == Mode::Nce) {
    // With u = s/τ − log(K·Z/N): −log h = softplus(−u), −log(1 − h) = softplus(u); stable for any s.
    const at::Tensor u = logits - std::log(static_cast<double>(K) * zUsed / static_cast<double>(numRows));
    rows = at::softplus(-u.select(1, 0)) + at::softplus(u.narrow(1, 1, K)).sum(1);
    coef = at::sigmoid(u);
  } else {
    rows = at::logsumexp(logits, 1) - logits.select(1, 0);
    coef = at::softmax(logits, 1);
  }
  coef.select(1, 0).sub_(1);  // d/ds_pos of both losses carries the −1 of the positive term
  coef.div_(o.tau * static_cast<double>(B));
  return {rows.mean(), coef, zUsed, zBatch};
}

struct NceFunction : public torch::autograd::Function<NceFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& bank,
                               const at::Tensor& index, const at::Tensor& shared, double tau, int64_t mode,
                               double z) {
    const Options o{tau, static_cast<Mode>(mode), z};
    const at::Tensor xc = x.contiguous();
    at::Tensor s;
    at::Tensor gathered = at::empty({0}, x.options());  // shared mode: the K negative rows, K×D
    if (shared.numel() > 0) {
      gathered = bank.index_select(0, shared);
      const at::Tensor positive = (xc * bank.index_select(0, index)).sum(1, true);
      s = at::cat({positive, at::matmul(xc, gathered.t())}, 1);
    } else {
      s = scores(xc, bank, index);
    }
    LossAndCoef r = lossFromScores(s, bank.size(0), o);
    ctx->save_for_backward({r.coef, bank, index, shared, gathered});
    at::Tensor stats = at::tensor({r.zUsed, r.zBatch}, at::kDouble);
    ctx->mark_non_differentiable({stats});
    return {r.loss, stats};
  }

  static variable_list backward(AutogradContext* ctx, variable_list gradOutputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &coef = saved[0], &bank = saved[1], &index = saved[2], &shared = saved[3], &gathered = saved[4];
    at::Tensor grad;
    if (shared.numel() > 0) {
      grad = coef.select(1, 0).unsqueeze(1) * bank.index_select(0, index) +
             at::matmul(coef.narrow(1, 1, coef.size(1) - 1), gathered);
    } else {
      grad = weightedRowSum(coef, bank, index);
    }
    grad.mul_(gradOutputs[0]);
    return {grad, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

std::vector<at::Tensor> applyNceFunction(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& index,
                                         const at::Tensor& shared, const Options& options) {
  return NceFunction::apply(x, bank, index, shared, options.tau, static_cast<int64_t>(options.mode), options.z);
}

}  // namespace pirl::nce
