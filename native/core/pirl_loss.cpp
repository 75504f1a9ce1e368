#include "pirl_loss.h"

#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "splitmix.h"
#include "unit_rows.h"

namespace pirl {

PirlLoss::PirlLoss(const PirlLossOptions& o) : options_(o) {
  TORCH_CHECK_VALUE(o.lambda >= 0 && o.lambda <= 1, "lambda must be in [0, 1], got ", o.lambda);
  TORCH_CHECK_VALUE(o.tau > 0 && std::isfinite(o.tau), "tau must be a positive number, got ", o.tau);
  TORCH_CHECK_VALUE(o.numNegatives >= 1, "numNegatives must be >= 1, got ", o.numNegatives);
  TORCH_CHECK_VALUE(o.momentum >= 0 && o.momentum < 1, "momentum must be in [0, 1), got ", o.momentum);
  TORCH_CHECK_VALUE(o.zMomentum >= 0 && o.zMomentum < 1, "zMomentum must be in [0, 1), got ", o.zMomentum);
}

void PirlLoss::setZ(double zImage, double zJigsaw) {
  TORCH_CHECK_VALUE(std::isfinite(zImage) && std::isfinite(zJigsaw), "Z must be finite, got ", zImage, ", ", zJigsaw);
  zImage_ = zImage;
  zJigsaw_ = zJigsaw;
}

at::Tensor PirlLoss::drawTerm(MemoryBank& bank, const at::Tensor& indices, const NegativeStreams& streams) const {
  if (options_.sharedNegatives) return bank.sampleShared(options_.numNegatives, streams);
  return bank.sampleNegatives(indices.size(0), options_.numNegatives,
                              options_.excludePositive ? indices : at::Tensor(), streams);
}

void PirlLoss::updateZ(double jigsawEstimate, double imageEstimate) {
  TORCH_CHECK_VALUE(std::isfinite(jigsawEstimate) && std::isfinite(imageEstimate), "Z's estimates must be finite, got ",
                    jigsawEstimate, ", ", imageEstimate);
  zJigsaw_ = options_.zMomentum * zJigsaw_ + (1 - options_.zMomentum) * jigsawEstimate;
  zImage_ = options_.zMomentum * zImage_ + (1 - options_.zMomentum) * imageEstimate;
}

PirlNegatives PirlLoss::drawNegatives(MemoryBank& bank, const at::Tensor& indices, const NegativeStreams& streams) const {
  const auto termStreams = [&](uint64_t term) { return NegativeStreams{splitmix64(streams.seed ^ term), streams.keys}; };
  at::Tensor jigsaw = drawTerm(bank, indices, termStreams(1));
  return {jigsaw, drawTerm(bank, indices, termStreams(2))};
}

nce::Result PirlLoss::term(MemoryBank& bank, const at::Tensor& x, const at::Tensor& indices, const at::Tensor& negatives,
                           double& z, at::Tensor& estimate) const {
  // Positives were checked by the caller, negatives come from the bank's own sampler.
  const bool first = options_.mode == nce::Mode::Nce && z <= 0;
  if (first && reduceZ_) {
    // The first estimate, over every rank's batch, before any rank's loss uses it (as one process would).
    const c10::NoGradGuard noGrad;
    z = reduceZ_(nce::nceLoss(x, bank.rows(), indices, negatives, {options_.tau, options_.mode, z}, IndexCheck::Trusted)
                     .zUsed.item<double>());
  }
  const nce::Result r = nce::nceLoss(x, bank.rows(), indices, negatives, {options_.tau, options_.mode, z}, IndexCheck::Trusted);
  if (options_.mode != nce::Mode::Nce) return r;  // only NCE uses Z: InfoNCE never reads it off the device
  if (first && !reduceZ_) {
    z = r.zUsed.item<double>();  // the first estimate
  } else if (!first && options_.zMode == ZMode::Ema) {
    estimate = r.zBatch;
  }
  return r;
}

namespace {

// Everything the terms would refuse only after the draw had moved the bank's generator (or the first term set its Z).
void checkShapes(const MemoryBank& bank, const at::Tensor& f, const at::Tensor& g, const at::Tensor& indices) {
  TORCH_CHECK_VALUE(f.sizes() == g.sizes(), "f and g must have one shape, got ", f.sizes(), " and ", g.sizes());
  TORCH_CHECK_VALUE(f.dim() == 2 && f.size(1) == bank.dim(), "f must be B×", bank.dim(), ", got ", f.sizes());
  TORCH_CHECK_VALUE(f.size(0) >= 1, "f and g must hold at least one sample, got ", f.sizes());
  const c10::Device device = bank.rows().device();
  TORCH_CHECK_VALUE(f.device() == device && g.device() == device, "f and g must be on the memory bank's device (", device,
                    "), got ", f.device(), " and ", g.device());
  TORCH_CHECK_VALUE(indices.dim() == 1 && indices.size(0) == f.size(0), "indices must hold one row per sample (",
                    f.size(0), "), got ", indices.sizes());
}

}  // namespace

PirlLossResult PirlLoss::operator()(MemoryBank& bank, const at::Tensor& f, const at::Tensor& g,
                                    const at::Tensor& indices, IndexCheck check, bool updateBank,
                                    const NegativeStreams& streams) {
  checkShapes(bank, f, g, indices);
  const at::Tensor rows = bank.onDevice(indices);  // given on the CPU (an array, an Int32Array) for a CUDA bank
  if (check == IndexCheck::Check) {
    // One read of the device for every check, before Z or the bank change.
    DeviceNumbers numbers;
    const size_t range = addRowRange(numbers, rows, "indices"), fChecks = addUnitRowChecks(numbers, f),
                 gChecks = addUnitRowChecks(numbers, g);
    numbers.read();
    checkRowRange(numbers, range, rows, "indices", bank.size());
    // A NaN in f became a bank row that made every loss it was drawn into NaN.
    checkUnitRows(numbers, fChecks, "f", ": a NaN or infinite row would enter the memory bank");
    checkUnitRows(numbers, gChecks, "g", "");
  }
  return (*this)(bank, f, g, rows, drawNegatives(bank, rows, streams), updateBank);
}

PirlLossResult PirlLoss::operator()(MemoryBank& bank, const at::Tensor& f, const at::Tensor& g,
                                    const at::Tensor& indices, const PirlNegatives& negatives, bool updateBank) {
  checkShapes(bank, f, g, indices);
  at::Tensor jigsawEstimate, imageEstimate;
  const nce::Result jigsaw = term(bank, g, indices, negatives.jigsaw, zJigsaw_, jigsawEstimate);
  const nce::Result image = term(bank, f, indices, negatives.image, zImage_, imageEstimate);
  const at::Tensor loss = options_.lambda * jigsaw.loss + (1 - options_.lambda) * image.loss;
  // Both terms saved no reference to the bank, so updating it before backward is safe.
  if (updateBank) bank.update(indices, f.detach(), options_.momentum, IndexCheck::Trusted);
  const at::Tensor zEstimates = jigsawEstimate.defined() ? at::stack({jigsawEstimate, imageEstimate}).to(at::kDouble) : at::Tensor();
  return {loss, image.loss.detach(), jigsaw.loss.detach(), zImage_, zJigsaw_, zEstimates};
}

}  // namespace pirl
