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
  double zImage;          // the Z each term used (NCE mode; <= 0 for InfoNCE): an EMA moves on at updateZ
  double zJigsaw;
  // With an EMA of Z, after the first step: this batch's estimates (jigsaw, image), 2 doubles on the device, for
  // the caller's updateZ; undefined where there is nothing to update.
  at::Tensor zEstimates;
};

// The negatives of both terms, B×K (or K shared) bank rows each.
struct PirlNegatives {
  at::Tensor jigsaw;
  at::Tensor image;
};

class PirlLoss {
 public:
  explicit PirlLoss(const PirlLossOptions& options);

  // f, g: B×D L2-normalised embeddings of the images and of their jigsaw versions; indices: their
  // B bank rows (checked unless `check` is Trusted). Draws fresh negatives for each term (jigsaw term
  // first), computes L, then updates the bank with f unless `updateBank` is false (the caller then
  // updates it, e.g. after checking the gradients). Each term keeps its own Z. Nothing here reads the
  // device but the checks (once) and NCE's first estimate of Z: with an EMA of Z, later steps return their
  // estimates (zEstimates) for the caller to read with its other numbers and apply (updateZ).
  // `streams`: where the negatives come from (default: the bank's generator); each term draws from its own.
  PirlLossResult operator()(MemoryBank& bank, const at::Tensor& f, const at::Tensor& g, const at::Tensor& indices,
                            IndexCheck check, bool updateBank, const NegativeStreams& streams = NegativeStreams());
  // The same with the negatives drawn beforehand (drawNegatives) and `indices` trusted: a training step
  // draws them outside the work a CUDA graph replays, since each step's differ.
  PirlLossResult operator()(MemoryBank& bank, const at::Tensor& f, const at::Tensor& g, const at::Tensor& indices,
                            const PirlNegatives& negatives, bool updateBank);
  // Fresh negatives for both terms, each from its own streams (the same keys), the jigsaw term's first.
  PirlNegatives drawNegatives(MemoryBank& bank, const at::Tensor& indices, const NegativeStreams& streams) const;

  const PirlLossOptions& options() const { return options_; }
  double zImage() const { return zImage_; }
  double zJigsaw() const { return zJigsaw_; }
  void setZ(double zImage, double zJigsaw);  // checkpoint restore; <= 0 means not estimated yet
  // How the first batch's estimate of Z becomes the run's: the mean over data-parallel ranks, so that every
  // replica starts from the same Z (unset: the estimate itself). Later estimates of an EMA are the caller's
  // to reduce (zEstimates).
  void setZEstimateReduction(std::function<double(double)> reduce) { reduceZ_ = std::move(reduce); }
  // Z ← zMomentum·Z + (1 − zMomentum)·estimate, for each term: an EMA step's zEstimates, once read.
  void updateZ(double jigsawEstimate, double imageEstimate);

 private:
  at::Tensor drawTerm(MemoryBank& bank, const at::Tensor& indices, const NegativeStreams& streams) const;
  // `estimate`: set to the batch's estimate of Z where the caller updates Z.
  nce::Result term(MemoryBank& bank, const at::Tensor& x, const at::Tensor& indices, const at::Tensor& negatives, double& z,
                   at::Tensor& estimate) const;

  PirlLossOptions options_;
  double zImage_ = -1;
  double zJigsaw_ = -1;
  std::function<double(double)> reduceZ_;
};

}  // namespace pirl
