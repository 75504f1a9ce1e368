// The PIRL objective (docs/PIRL.md, "Loss"): L = λ·L_NCE(m_y, g(v_It)) + (1−λ)·L_NCE(m_y, f(v_I)),
// both terms against the bank as it was before this step, then m_y updated with f̂.
#pragma once

#include <ATen/ATen.h>

#include <functional>

#include "memory_bank.h"
#include "nce/nce.h"

namespace pirl {

enum class ZMode { Frozen, Ema };

// Every field is set by the caller: the defaults live in TypeScript (lib/config.ts).
struct PirlLossOptions {
  double lambda;
  double tau;
  int64_t numNegatives;  // K
  double momentum;       // μ of the bank update
  nce::Mode mode;
  ZMode zMode;           // Frozen: NPID's one-time estimate; Ema: follows each batch's estimate
  double zMomentum;      // EMA weight of the old Z
  bool sharedNegatives;  // one set of K for the whole batch (a matrix product)
  bool excludePositive;
};

struct PirlLossResult {
  at::Tensor loss;        // scalar, differentiable w.r.t. f and g
  at::Tensor lossImage;   // L_NCE(m_y, f(v_I)), detached
  at::Tensor lossJigsaw;  // L_NCE(m_y, g(v_It)), detached
  double zImage;          // the Z each term will use from now on (NCE mode; <= 0 for InfoNCE)
  double zJigsaw;
};

class PirlLoss {
 public:
  explicit PirlLoss(const PirlLossOptions& options);

  // f, g: B×D L2-normalised embeddings of the images and of their jigsaw versions; indices: their
  // B bank rows (checked unless `check` is Trusted). Draws fresh negatives for each term (jigsaw term
  // first), computes L, then updates the bank with f unless `updateBank` is false (the caller then
  // updates it, e.g. after checking the gradients). Each term keeps its own Z. Nothing here reads the
  // device except NCE's Z where it must (the first step; every step with an EMA of Z).
  // `streams`: where the negatives come from (default: the bank's generator); each term draws from its own.
  PirlLossResult operator()(MemoryBank& bank, const at::Tensor& f, const at::Tensor& g, const at::Tensor& indices,
                            IndexCheck check, bool updateBank, const NegativeStreams& streams = NegativeStreams());

  const PirlLossOptions& options() const { return options_; }
  double zImage() const { return zImage_; }
  double zJigsaw() const { return zJigsaw_; }
  void setZ(double zImage, double zJigsaw);  // checkpoint restore; <= 0 means not estimated yet
  // How a batch's estimate of Z becomes the run's: the mean over data-parallel ranks, so that every
  // replica keeps the same Z (unset: the estimate itself).
  void setZEstimateReduction(std::function<double(double)> reduce) { reduceZ_ = std::move(reduce); }

 private:
  at::Tensor drawNegatives(MemoryBank& bank, const at::Tensor& indices, const NegativeStreams& streams) const;
  nce::Result term(MemoryBank& bank, const at::Tensor& x, const at::Tensor& indices, double& z,
                   const NegativeStreams& streams) const;

  PirlLossOptions options_;
  double zImage_ = -1;
  double zJigsaw_ = -1;
  std::function<double(double)> reduceZ_;
};

}  // namespace pirl
