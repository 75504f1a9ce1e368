// The fused NCE loss of PIRL (docs/PIRL.md, "Loss"): scores and gradients are read straight from
// memory-bank rows, so no B×(K+1)×D tensor of gathered negatives ever exists; memory is O(B·K).
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "../index_check.h"

namespace pirl::nce {

enum class Mode {
  Nce,      // h = e^{s/τ} / (e^{s/τ} + K·Z/N); L = −log h(pos) − Σ_k log(1 − h(neg_k))  (paper, VISSL)
  InfoNce,  // softmax cross-entropy over [pos, neg_1..K] / τ, the positive first
};

struct Options {
  double tau;
  Mode mode;
  // NCE partition-function estimate Z; a value <= 0 means "estimate it from this batch" (first step).
  double z;
};

// The Z's are 0-dim double tensors where x is: reading one waits for the device, so callers read
// them only when they need them.
struct Result {
  at::Tensor loss;    // scalar, mean over the batch; differentiable w.r.t. x only
  at::Tensor zUsed;   // the Z the loss was computed with (NCE mode)
  at::Tensor zBatch;  // this batch's estimate N·mean(e^{s/τ}) over all B·(K+1) scores
};

// x: B×D embeddings (float32/float64, CPU or CUDA); bank: N×D rows (never gets a gradient);
// positives: B int64 rows; negatives: B×K int64 rows per sample, or K rows shared by the batch
// (then the scores are one matrix product). With IndexCheck::Check the indices are checked (out of
// range → c10::IndexError), and x's rows (unit, finite); Trusted skips that read of the device.
// BankRows::Check reads the whole bank too (a caller's tensor); Unit trusts its rows (a MemoryBank's: unit by construction).
enum class BankRows { Check, Unit };
Result nceLoss(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& positives, const at::Tensor& negatives,
               const Options& options, IndexCheck check, BankRows bankRows = BankRows::Check);

// The textbook implementation (gather the negatives, bmm, ATen autograd) used as the reference in
// tests and benchmarks. It materialises B×(K+1)×D.
Result nceLossReference(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& positives,
                        const at::Tensor& negatives, const Options& options, BankRows bankRows = BankRows::Check);

}  // namespace pirl::nce
