// Schema of the fused NCE op: argument checks, then the autograd Function (autograd/) that calls
// the device kernels (cpu/, cuda/).
#include "nce.h"

#include <c10/util/Exception.h>

#include <cmath>

#include "../dtype.h"
#include "../unit_rows.h"
#include "autograd/nce_function.h"

namespace pirl::nce {

namespace {

void checkArguments(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& positives,
                    const at::Tensor& negatives, const Options& o, IndexCheck check, BankRows bankRows) {
  TORCH_CHECK_VALUE(x.dim() == 2, "x must be B×D, got ", x.sizes());
  TORCH_CHECK_VALUE(bank.dim() == 2, "bank must be N×D, got ", bank.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()) && x.scalar_type() != at::kHalf && x.scalar_type() != at::kBFloat16,
                   "x must be float32 or float64, got ", dtypeName(x.scalar_type()));
  TORCH_CHECK_TYPE(bank.scalar_type() == x.scalar_type(), "bank must have x's dtype ", x.scalar_type(), ", got ",
                   bank.scalar_type());
  TORCH_CHECK_TYPE(bank.device() == x.device() && positives.device() == x.device() && negatives.device() == x.device(),
                   "x, bank, positives and negatives must be on one device, got ", x.device(), ", ", bank.device(), ", ",
                   positives.device(), ", ", negatives.device());
  TORCH_CHECK_VALUE(bank.size(1) == x.size(1), "bank rows must have x's width ", x.size(1), ", got ", bank.size(1));
  TORCH_CHECK_VALUE(positives.dim() == 1 && positives.size(0) == x.size(0), "positives must have shape [", x.size(0),
                    "], got ", positives.sizes());
  TORCH_CHECK_VALUE((negatives.dim() == 2 && negatives.size(0) == x.size(0)) || negatives.dim() == 1,
                    "negatives must be B×K (per sample) or K (shared) with B = ", x.size(0), ", got ", negatives.sizes());
  TORCH_CHECK_VALUE(negatives.size(-1) >= 1, "negatives must hold at least one row per sample, got ", negatives.sizes());
  TORCH_CHECK_VALUE(x.size(0) >= 1, "x must hold at least one sample");
  TORCH_CHECK_VALUE(o.tau > 0 && std::isfinite(o.tau), "tau must be a positive number, got ", o.tau);
  TORCH_CHECK_VALUE(std::isfinite(o.z), "z must be finite, got ", o.z);
  TORCH_CHECK_TYPE(positives.scalar_type() == at::kLong && negatives.scalar_type() == at::kLong,
                   "positives and negatives must be int64, got ", positives.scalar_type(), " and ", negatives.scalar_type());
  if (check == IndexCheck::Trusted) return;
  DeviceNumbers numbers;
  const size_t p = addRowRange(numbers, positives, "positives"), n = addRowRange(numbers, negatives, "negatives");
  const size_t rows = addUnitRowChecks(numbers, x);
  const size_t bankChecks = bankRows == BankRows::Check ? addUnitRowChecks(numbers, bank) : 0;
  numbers.read();
  checkRowRange(numbers, p, positives, "positives", bank.size(0));
  checkRowRange(numbers, n, negatives, "negatives", bank.size(0));
  checkUnitRows(numbers, rows, "x", "");  // rows of 1000 gave a NaN loss; of norm 4, Z ≈ 4e13
  // A bank row of norm 4 drawn as a negative scored as a cosine of 4: another loss, silently.
  if (bankRows == BankRows::Check) checkUnitRows(numbers, bankChecks, "bank", ": a NaN or infinite row would poison every loss it is drawn into");
}

}  // namespace

Result nceLoss(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& positives, const at::Tensor& negatives,
               const Options& options, IndexCheck check, BankRows bankRows) {
  checkArguments(x, bank, positives, negatives, options, check, bankRows);
  auto out = applyNceFunction(x, bank.detach().contiguous(), positives.contiguous(), negatives.contiguous(), options);
  return {out[0], out[1][0], out[1][1]};
}

Result nceLossReference(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& positives,
                        const at::Tensor& negatives, const Options& o, BankRows bankRows) {
  checkArguments(x, bank, positives, negatives, o, IndexCheck::Check, bankRows);
  const int64_t B = x.size(0), K = negatives.size(-1), N = bank.size(0);
  const at::Tensor neg = negatives.dim() == 1 ? negatives.unsqueeze(0).expand({B, K}) : negatives;
  const at::Tensor index = at::cat({positives.unsqueeze(1), neg}, 1);
  const at::Tensor gathered = bank.detach().index_select(0, index.reshape(-1)).view({B, K + 1, -1});
  const at::Tensor s = at::bmm(gathered, x.unsqueeze(2)).squeeze(2);
  const at::Tensor logits = s / o.tau;
  const at::Tensor zBatch = logits.detach().exp().mean(at::kDouble) * static_cast<double>(N);
  const double z = o.z > 0 ? o.z : zBatch.item<double>();
  at::Tensor loss;
  if (o.mode == Mode::Nce) {
    const at::Tensor e = logits.exp();
    const at::Tensor h = e / (e + static_cast<double>(K) * z / static_cast<double>(N));
    loss = -(at::log(h.select(1, 0)) + at::log(1 - h.narrow(1, 1, K)).sum(1)).mean();
  } else {
    loss = at::cross_entropy_loss(logits, at::zeros({B}, index.options()));
  }
  // InfoNCE uses no Z: its zUsed is the estimate, whatever z was given.
  return {loss, o.mode == Mode::Nce ? at::scalar_tensor(z, zBatch.options()) : zBatch, zBatch};
}

}  // namespace pirl::nce
