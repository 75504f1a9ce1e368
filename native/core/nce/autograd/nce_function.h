// The fused NCE op as a libtorch autograd Function, so it composes with the model's backward.
#pragma once

#include <ATen/ATen.h>

#include "../nce.h"

namespace pirl::nce {

// Returns {loss, stats} with stats = [zUsed, zBatch] (not differentiable). `negatives` is B×K (per
// sample) or K (shared by the batch). Nothing saved for backward refers to the bank, so the bank may
// be updated in place before backward runs.
std::vector<at::Tensor> applyNceFunction(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& positives,
                                         const at::Tensor& negatives, const Options& options);

}  // namespace pirl::nce
