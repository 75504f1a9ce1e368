// Device kernels behind the fused NCE op with per-sample negatives. Each bank row is read once,
// while it is in cache: its dot product, its loss term and its gradient contribution are done
// together, so memory stays O(B·D) — no B×(K+1) scores and no B×(K+1)×D gather.
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>

#include <cmath>

#include "nce.h"

namespace pirl::nce {

// A score's e^{s/τ} = noise·e^{u} (noise = K·Z/N), from the kernels' e = e^{−|u|}; beyond |u| = 80 e is denormal
// or 0 in float32 (the Z estimate lost digits from u ≈ 87, then became infinite), so e^{u} is taken in double.
template <typename T>
C10_HOST_DEVICE inline double scoreExp(T u, T e, double noise) {
  if (u > T(80) || u < T(-80)) return noise * ::exp(static_cast<double>(u));
  return u >= 0 ? noise / static_cast<double>(e) : noise * static_cast<double>(e);
}

struct FusedResult {
  at::Tensor rowLoss;  // B: the loss of each sample
  at::Tensor grad;     // B×D: d(mean loss)/dx
  at::Tensor expSum;   // 0-dim double where x is: Σ e^{s/τ} over all B·(K+1) scores (for Z), not read here
};

// Σ e^{s/τ} over the B·(K+1) scores (0-dim double where x is): the extra pass that estimates Z on the first step.
at::Tensor expSumCpu(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& positives,
                 const at::Tensor& negatives, double tau);

// Loss and gradient in one pass. `logNoise` = log(K·Z/N), used by Mode::Nce only.
FusedResult fusedNceCpu(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& positives,
                        const at::Tensor& negatives, double tau, Mode mode, double logNoise);

#ifdef PIRL_WITH_CUDA
at::Tensor expSumCuda(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& positives,
                  const at::Tensor& negatives, double tau);
FusedResult fusedNceCuda(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& positives,
                         const at::Tensor& negatives, double tau, Mode mode, double logNoise);
#endif

}  // namespace pirl::nce
