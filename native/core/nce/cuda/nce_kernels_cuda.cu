// CUDA kernels of the fused NCE op, each bank row read once, memory O(B·D):
// - split (float32, D = 128, 256 or 512: pirl's embeddings): a sample's K+1 rows are split across blocks so
//   that any batch fills the GPU, each warp reads 4 rows at once as float4s with x and its accumulator in
//   registers (a warp reading one row at a time kept too few bytes in flight to approach the memory
//   bandwidth), NCE's per-row scalars each on one lane, and a second kernel merges each sample's partial states;
// - rowwise (any D, float64): one block per sample, one warp per bank row at a time, accumulators in
//   shared memory, the block merging its warps at the end.
// Each warp keeps its own loss, Σe^{s/τ} and gradient accumulator (for InfoNCE an online-softmax state).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
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
  extern __shared__ __align__(16) unsigned char smem[];
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
      expSum += scoreExp(u, e, noise);
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

constexpr size_t kSharedLimit = 48 * 1024;

// The widest embedding whose sharedBytes fits kSharedLimit.
int64_t widestRowwise(size_t elementSize) {
  return static_cast<int64_t>(((kSharedLimit - 8 - kWarps * sizeof(double)) / elementSize - (3 * kWarps + 1)) / kWarps);
}

constexpr int kSplitWarps = 4;
constexpr int kRowsInFlight = 4;

__device__ __forceinline__ float dot4(const float4& a, const float4& b) {
  return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}

__device__ __forceinline__ void fma4(float4& acc, float w, const float4& r) {
  acc.x += w * r.x;
  acc.y += w * r.y;
  acc.z += w * r.z;
  acc.w += w * r.w;
}

__device__ __forceinline__ void scale4(float4& acc, float s) {
  acc.x *= s;
  acc.y *= s;
  acc.z *= s;
  acc.w *= s;
}

// Block (b, s) scores rows [s·rowsPerSplit, …) of sample b (row 0 the positive, row k the negative k−1) and
// leaves its partial state: part[(b·S + s)·2 + {0, 1}] = (NCE: loss, – | InfoNCE: max m, Σe^{t−m}),
// partExp = NCE's Σ noise·e^{±u}, partAcc = Σ w·row (NCE) or Σ e^{t−m}·row (InfoNCE); InfoNCE's positive
// score goes to tPositive[b]. V float4s per lane: D = 128·V.
template <int V>
__global__ void __launch_bounds__(kSplitWarps * 32) splitNceKernel(
    const float* __restrict__ x, const float* __restrict__ bank, const int64_t* __restrict__ pos,
    const int64_t* __restrict__ neg, int64_t K, int64_t rowsPerSplit, float invTau, float logNoise, double noise,
    int mode, float* __restrict__ part, double* __restrict__ partExp, float* __restrict__ partAcc,
    float* __restrict__ tPositive) {
  constexpr int D = 128 * V;
  __shared__ float4 accs[kSplitWarps][D / 4];
  __shared__ float scalars[kSplitWarps][2];
  __shared__ double exps[kSplitWarps];
  const int64_t b = blockIdx.x, s = blockIdx.y, S = gridDim.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t end = min((s + 1) * rowsPerSplit, K + 1);
  float4 xv[V], acc[V];
  for (int v = 0; v < V; ++v) {
    xv[v] = reinterpret_cast<const float4*>(x + b * D)[lane + 32 * v];
    acc[v] = make_float4(0.f, 0.f, 0.f, 0.f);
  }
  float loss = 0.f, m = -INFINITY, l = 0.f;
  double expSum = 0;
  for (int64_t k0 = s * rowsPerSplit + warp * kRowsInFlight; k0 < end; k0 += kSplitWarps * kRowsInFlight) {
    // Every load of the kRowsInFlight rows is issued before any of them is used.
    float4 rv[kRowsInFlight][V];
    for (int i = 0; i < kRowsInFlight; ++i) {
      const int64_t k = k0 + i;
      const int64_t row = k >= end || k == 0 ? pos[b] : neg[b * K + k - 1];  // past the end: a harmless valid row
      const float4* r = reinterpret_cast<const float4*>(bank + row * D);
      for (int v = 0; v < V; ++v) rv[i][v] = r[lane + 32 * v];
    }
    float t[kRowsInFlight];
    for (int i = 0; i < kRowsInFlight; ++i) {
      float d = 0.f;
      for (int v = 0; v < V; ++v) d += dot4(xv[v], rv[i][v]);
      t[i] = warpSum(d) * invTau;
    }
    if (k0 == 0 && lane == 0 && mode == 1) tPositive[b] = t[0];
    if (mode == 0) {
      // Row i's loss term, share of Z and weight on lane i alone, its weight then shuffled to every lane: done
      // on all 32 lanes, these scalars (two divisions, a log, a float64 division) were most of the kernel's work.
      float ti = t[0];
      for (int i = 1; i < kRowsInFlight; ++i) ti = lane == i ? t[i] : ti;
      float wi = 0.f;
      if (lane < kRowsInFlight && k0 + lane < end) {
        const bool isPositive = k0 + lane == 0;
        const float u = ti - logNoise;
        const float e = expf(-fabsf(u));
        const float sigma = u >= 0 ? 1.f / (1.f + e) : e / (1.f + e);
        expSum += scoreExp(u, e, noise);
        loss += (isPositive ? fmaxf(-u, 0.f) : fmaxf(u, 0.f)) + log1pf(e);
        wi = sigma - (isPositive ? 1.f : 0.f);
      }
      for (int i = 0; i < kRowsInFlight && k0 + i < end; ++i) {
        const float w = __shfl_sync(0xffffffffu, wi, i);
        for (int v = 0; v < V; ++v) fma4(acc[v], w, rv[i][v]);
      }
    } else {
      float mNew = m;
      for (int i = 0; i < kRowsInFlight && k0 + i < end; ++i) mNew = fmaxf(mNew, t[i]);
      const float rescale = expf(m - mNew);  // 0 on the warp's first rows (m = −∞)
      l *= rescale;
      for (int v = 0; v < V; ++v) scale4(acc[v], rescale);
      for (int i = 0; i < kRowsInFlight && k0 + i < end; ++i) {
        const float w = expf(t[i] - mNew);
        l += w;
        for (int v = 0; v < V; ++v) fma4(acc[v], w, rv[i][v]);
      }
      m = mNew;
    }
  }
  for (int v = 0; v < V; ++v) accs[warp][lane + 32 * v] = acc[v];
  if (mode == 0) {  // the sums of rows' terms that lanes 0..kRowsInFlight−1 kept
    loss = warpSum(loss);
    expSum = warpSum(expSum);
  }
  if (lane == 0) {
    scalars[warp][0] = mode == 0 ? loss : m;
    scalars[warp][1] = l;
    exps[warp] = expSum;
  }
  __syncthreads();

  // The block's state from its warps' (a warp without rows has m = −∞: weight 0; warp 0 always has rows).
  float M = -INFINITY, weight[kSplitWarps];
  if (mode == 1) {
    for (int w = 0; w < kSplitWarps; ++w) M = fmaxf(M, scalars[w][0]);
  }
  for (int w = 0; w < kSplitWarps; ++w) weight[w] = mode == 1 ? expf(scalars[w][0] - M) : 1.f;
  const int64_t slot = b * S + s;
  const float* flat = reinterpret_cast<const float*>(accs);
  for (int d = threadIdx.x; d < D; d += kSplitWarps * 32) {
    float total = 0.f;
    for (int w = 0; w < kSplitWarps; ++w) total += flat[w * D + d] * weight[w];
    partAcc[slot * D + d] = total;
  }
  if (threadIdx.x == 0) {
    float first = 0.f, second = 0.f;
    double e = 0;
    for (int w = 0; w < kSplitWarps; ++w) {
      first += scalars[w][0];
      second += scalars[w][1] * weight[w];
      e += exps[w];
    }
    part[slot * 2] = mode == 1 ? M : first;
    part[slot * 2 + 1] = second;
    partExp[slot] = e;
  }
}

// One block per sample: merges the S partial states of splitNceKernel into the sample's loss, gradient and
// Σe^{s/τ}, exactly as the rowwise kernel merges its warps.
__global__ void mergeSplitsKernel(int64_t S, int64_t D, const float* __restrict__ part,
                                  const double* __restrict__ partExp, const float* __restrict__ partAcc,
                                  const float* __restrict__ tPositive, const float* __restrict__ bank,
                                  const int64_t* __restrict__ pos, float gradScale, int mode,
                                  float* __restrict__ rowLoss, float* __restrict__ grad, double* __restrict__ expSums) {
  const int64_t b = blockIdx.x;
  const float* p = part + b * S * 2;
  float M = -INFINITY, L = 0.f;
  if (mode == 1) {
    for (int64_t s = 0; s < S; ++s) M = fmaxf(M, p[2 * s]);
    for (int64_t s = 0; s < S; ++s) L += p[2 * s + 1] * expf(p[2 * s] - M);
  }
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float total = 0.f;
    for (int64_t s = 0; s < S; ++s) {
      total += partAcc[(b * S + s) * D + d] * (mode == 1 ? expf(p[2 * s] - M) : 1.f);
    }
    grad[b * D + d] = (mode == 1 ? total / L - bank[pos[b] * D + d] : total) * gradScale;
  }
  if (threadIdx.x == 0) {
    if (mode == 0) {
      float loss = 0.f;
      double e = 0;
      for (int64_t s = 0; s < S; ++s) {
        loss += p[2 * s];
        e += partExp[b * S + s];
      }
      rowLoss[b] = loss;
      expSums[b] = e;
    } else {
      rowLoss[b] = M + logf(L) - tPositive[b];
      expSums[b] = static_cast<double>(L) * exp(static_cast<double>(M));
    }
  }
}

bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

// The split kernels' launch: enough blocks to fill every SM several times over, each with at least 8
// rounds of kRowsInFlight rows per warp.
template <int V>
void launchSplit(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& positives, const at::Tensor& negatives,
                 double tau, Mode mode, double logNoise, const at::Tensor& rowLoss, const at::Tensor& grad,
                 const at::Tensor& sums) {
  const int64_t B = x.size(0), D = x.size(1), K = negatives.size(1), rows = K + 1;
  constexpr int64_t kMinRowsPerSplit = kSplitWarps * kRowsInFlight * 8;
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, x.device().index()));
  const int64_t wanted = (12 * sms + B - 1) / B, most = (rows + kMinRowsPerSplit - 1) / kMinRowsPerSplit;
  const int64_t splits = std::clamp<int64_t>(wanted, 1, std::min<int64_t>(most, 65535));
  const int64_t rowsPerSplit = (rows + splits - 1) / splits;
  const int64_t S = (rows + rowsPerSplit - 1) / rowsPerSplit;  // rounding up may leave the last split empty: fewer
  const auto f = x.options().dtype(at::kFloat);
  at::Tensor part = at::empty({B, S, 2}, f), partAcc = at::empty({B, S, D}, f), tPositive = at::empty({B}, f);
  at::Tensor partExp = at::empty({B, S}, x.options().dtype(at::kDouble));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int m = mode == Mode::Nce ? 0 : 1;
  splitNceKernel<V><<<dim3(B, S), kSplitWarps * 32, 0, stream>>>(
      x.data_ptr<float>(), bank.data_ptr<float>(), positives.data_ptr<int64_t>(), negatives.data_ptr<int64_t>(), K,
      rowsPerSplit, static_cast<float>(1.0 / tau), static_cast<float>(logNoise),
      std::exp(static_cast<double>(static_cast<float>(logNoise))), m,
      part.data_ptr<float>(), partExp.data_ptr<double>(), partAcc.data_ptr<float>(), tPositive.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  mergeSplitsKernel<<<B, 128, 0, stream>>>(S, D, part.data_ptr<float>(), partExp.data_ptr<double>(),
                                           partAcc.data_ptr<float>(), tPositive.data_ptr<float>(), bank.data_ptr<float>(),
                                           positives.data_ptr<int64_t>(), static_cast<float>(1.0 / (tau * B)), m,
                                           rowLoss.data_ptr<float>(), grad.data_ptr<float>(), sums.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
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
  if (x.scalar_type() == at::kFloat && aligned16(x) && aligned16(bank) && (D == 128 || D == 256 || D == 512)) {
    if (D == 128) launchSplit<1>(x, bank, positives, negatives, tau, mode, logNoise, rowLoss, grad, sums);
    if (D == 256) launchSplit<2>(x, bank, positives, negatives, tau, mode, logNoise, rowLoss, grad, sums);
    if (D == 512) launchSplit<4>(x, bank, positives, negatives, tau, mode, logNoise, rowLoss, grad, sums);
    return {rowLoss, grad, sums.sum()};
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pirl_nce_fused_cuda", [&] {
    TORCH_CHECK_VALUE(D <= widestRowwise(sizeof(scalar_t)), "nceLoss on CUDA supports embeddings up to ",
                      widestRowwise(sizeof(scalar_t)), " wide, got ", D);
    const size_t shared = sharedBytes(D, sizeof(scalar_t));
    fusedNceKernel<scalar_t><<<B, kThreads, shared, c10::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<scalar_t>(), bank.data_ptr<scalar_t>(), positives.data_ptr<int64_t>(),
        negatives.data_ptr<int64_t>(), K, D, static_cast<scalar_t>(1.0 / tau), static_cast<scalar_t>(logNoise),
        std::exp(static_cast<double>(static_cast<scalar_t>(logNoise))),  // as the CPU: noise·e^u = e^t exactly
        static_cast<scalar_t>(1.0 / (tau * static_cast<double>(B))),
        mode == Mode::Nce ? 0 : 1, rowLoss.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(), sums.data_ptr<double>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {rowLoss, grad, sums.sum()};
}

}  // namespace pirl::nce
