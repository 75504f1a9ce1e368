// CUDA kernels of the fused NCE op: one block per sample, one warp per bank row at a time. Each warp
// keeps its own loss, Σe^{s/τ} and gradient accumulator (for InfoNCE an online-softmax state) in
// shared memory; the block merges its warps at the end. Memory O(B·D), each row read once.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>

#include "../nce_kernels.h"

namespace pirl::nce {

namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;

template <typename T>
__device__ __forceinline__ T warpSum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T>
__device__ __forceinline__ T rowDot(const T* __restrict__ x, const T* __restrict__ row, int64_t D, int lane) {
  T s = 0;
  for (int64_t d = lane; d < D; d += 32) s += x[d] * row[d];
  return warpSum(s);
}

// mode 0 = NCE, 1 = InfoNCE. Shared memory: kWarps×D accumulators, then per-warp scalars.
template <typename T>
__global__ void fusedNceKernel(const T* __restrict__ x, const T* __restrict__ bank, const int64_t* __restrict__ pos,
                               const int64_t* __restrict__ neg, int64_t K, int64_t D, T invTau, T logNoise,
                               double noise, T gradScale, int mode, T* __restrict__ rowLoss, T* __restrict__ grad,
                               double* __restrict__ expSums) {
  extern __shared__ unsigned char smem[];
  T* acc = reinterpret_cast<T*>(smem);                  // kWarps × D
  T* warpLoss = acc + kWarps * D;                       // kWarps (NCE) / running max m (InfoNCE)
  T* warpNorm = warpLoss + kWarps;                      // kWarps: InfoNCE normaliser l
  T* warpPositive = warpNorm + kWarps;                  // kWarps: t of the positive (warp 0 only)
  double* warpExp = reinterpret_cast<double*>(warpPositive + kWarps + 1);  // kWarps, 8-byte aligned below
  warpExp = reinterpret_cast<double*>((reinterpret_cast<uintptr_t>(warpExp) + 7) & ~uintptr_t(7));

  const int64_t b = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const T* xb = x + b * D;
  T* myAcc = acc + warp * D;
  for (int64_t d = lane; d < D; d += 32) myAcc[d] = 0;
  T loss = 0, m = -INFINITY, l = 0, tPositive = 0;
  double expSum = 0;

  for (int64_t k = warp; k <= K; k += kWarps) {  // k = 0 is the positive
    const bool isPositive = k == 0;
    const T* row = bank + (isPositive ? pos[b] : neg[b * K + k - 1]) * D;
    const T t = rowDot(xb, row, D, lane) * invTau;
    if (mode == 0) {
      const T u = t - logNoise;
      const T e = exp(-fabs(u));
      const T sigma = u >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);
      expSum += u >= 0 ? noise / static_cast<double>(e) : noise * static_cast<double>(e);
      loss += (isPositive ? fmax(-u, T(0)) : fmax(u, T(0))) + log1p(e);
      const T w = sigma - (isPositive ? T(1) : T(0));
      for (int64_t d = lane; d < D; d += 32) myAcc[d] += w * row[d];
    } else {
      if (isPositive) tPositive = t;
      if (t > m) {
        const T scale = exp(m - t);
        l = l * scale + 1;
        for (int64_t d = lane; d < D; d += 32) myAcc[d] = myAcc[d] * scale + row[d];
        m = t;
      } else {
        const T w = exp(t - m);
        l += w;
        for (int64_t d = lane; d < D; d += 32) myAcc[d] += w * row[d];
      }
    }
  }
  if (lane == 0) {
    warpLoss[warp] = mode == 0 ? loss : m;
    warpNorm[warp] = l;
    warpExp[warp] = expSum;
    if (warp == 0) warpPositive[0] = tPositive;
  }
  __syncthreads();

  // Merge the warps: plain sums for NCE, rescaled to the common max for InfoNCE.
  T M = -INFINITY, L = 0;
  if (mode == 1) {
    for (int w = 0; w < kWarps; ++w) M = fmax(M, warpLoss[w]);
    for (int w = 0; w < kWarps; ++w) L += warpNorm[w] * exp(warpLoss[w] - M);
  }
  for (int64_t d = threadIdx.x; d < D; d += kThreads) {
    T total = 0;
    for (int w = 0; w < kWarps; ++w) {
      const T weight = mode == 1 ? exp(warpLoss[w] - M) : T(1);
      total += acc[w * D + d] * weight;
    }
    const T positive = bank[pos[b] * D + d];
    grad[b * D + d] = (mode == 1 ? total / L - positive : total) * gradScale;
  }
  if (threadIdx.x == 0) {
    double e = 0;
    for (int w = 0; w < kWarps; ++w) e += warpExp[w];
    if (mode == 0) {
      T total = 0;
      for (int w = 0; w < kWarps; ++w) total += warpLoss[w];
      rowLoss[b] = total;
    } else {
      rowLoss[b] = M + log(L) - warpPositive[0];
      e = static_cast<double>(L) * exp(static_cast<double>(M));
    }
    expSums[b] = e;
  }
}

template <typename T>
__global__ void expSumKernel(const T* __restrict__ x, const T* __restrict__ bank, const int64_t* __restrict__ pos,
                             const int64_t* __restrict__ neg, int64_t K, int64_t D, T invTau,
                             double* __restrict__ expSums) {
  __shared__ double partial[kWarps];
  const int64_t b = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  double sum = 0;
  for (int64_t k = warp; k <= K; k += kWarps) {
    const T* row = bank + (k == 0 ? pos[b] : neg[b * K + k - 1]) * D;
    sum += exp(static_cast<double>(rowDot(x + b * D, row, D, lane) * invTau));
  }
  if (lane == 0) partial[warp] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0;
    for (int w = 0; w < kWarps; ++w) total += partial[w];
    expSums[b] = total;
  }
}

size_t sharedBytes(int64_t D, size_t elementSize) {
  return (kWarps * D + 3 * kWarps + 1) * elementSize + 8 + kWarps * sizeof(double);
}

}  // namespace

at::Tensor expSumCuda(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& positives,
                  const at::Tensor& negatives, double tau) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t B = x.size(0), D = x.size(1), K = negatives.size(1);
  at::Tensor sums = at::empty({B}, x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pirl_nce_expsum_cuda", [&] {
    expSumKernel<scalar_t><<<B, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<scalar_t>(), bank.data_ptr<scalar_t>(), positives.data_ptr<int64_t>(),
        negatives.data_ptr<int64_t>(), K, D, static_cast<scalar_t>(1.0 / tau), sums.data_ptr<double>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return sums.sum();  // stays on the device: the caller reads it only when it needs Z
}

FusedResult fusedNceCuda(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& positives,
                         const at::Tensor& negatives, double tau, Mode mode, double logNoise) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t B = x.size(0), D = x.size(1), K = negatives.size(1);
  at::Tensor rowLoss = at::empty({B}, x.options());
  at::Tensor grad = at::empty({B, D}, x.options());
  at::Tensor sums = at::empty({B}, x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pirl_nce_fused_cuda", [&] {
    const size_t shared = sharedBytes(D, sizeof(scalar_t));
    TORCH_CHECK_VALUE(shared <= 48 * 1024, "nceLoss on CUDA supports embeddings up to ",
                      (48 * 1024 - 64) / (kWarps * sizeof(scalar_t)), " wide, got ", D);
    fusedNceKernel<scalar_t><<<B, kThreads, shared, c10::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<scalar_t>(), bank.data_ptr<scalar_t>(), positives.data_ptr<int64_t>(),
        negatives.data_ptr<int64_t>(), K, D, static_cast<scalar_t>(1.0 / tau), static_cast<scalar_t>(logNoise),
        std::exp(logNoise), static_cast<scalar_t>(1.0 / (tau * static_cast<double>(B))),
        mode == Mode::Nce ? 0 : 1, rowLoss.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(), sums.data_ptr<double>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {rowLoss, grad, sums.sum()};
}

}  // namespace pirl::nce
