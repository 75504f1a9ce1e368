// Device kernels behind the fused NCE op: only the bank-row dot products and the gradient
// accumulation need custom kernels; the loss on the B×(K+1) scores is plain ATen.
#pragma once

#include <ATen/ATen.h>

namespace pirl::nce {

// scores[b, k] = <x[b], bank[index[b, k]]>, index B×(K+1).
at::Tensor scoresCpu(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& index);
// grad[b] = Σ_k coef[b, k] · bank[index[b, k]].
at::Tensor weightedRowSumCpu(const at::Tensor& coef, const at::Tensor& bank, const at::Tensor& index);

}  // namespace pirl::nce
