// The fused NCE op as a libtorch autograd Function, so it composes with the model's backward.
#pragma once

#include <ATen/ATen.h>

#include "../nce.h"

namespace pirl::nce {

// Returns {loss, stats} where stats = [zUsed, zBatch] (not differentiable). `index` is B×(K+1)
// (positive first) in per-sample mode, `shared` then empty; in shared mode `index` is the B positives
// and `shared` the K negatives.
std::vector<at::Tensor> applyNceFunction(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& index,
                                         const at::Tensor& shared, const Options& options);

}  // namespace pirl::nce
