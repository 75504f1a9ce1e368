// CPU kernels of the fused NCE op: parallel over the batch; D-loops written with independent lanes
// so the compiler vectorises them without fast-math; upcoming bank rows are prefetched because
// random 512-byte rows of a large bank make this loop latency-bound.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "../nce_kernels.h"

namespace pirl::nce {

namespace {

constexpr int kLanes = 8;
constexpr int64_t kPrefetchAhead = 16;  // rows in flight per thread: measured best of 2, 6, 16, 32 on the CI machine
constexpr int64_t kCacheLine = 64;

template <typename T>
inline T dot(const T* __restrict a, const T* __restrict b, int64_t d) {
  T acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= d; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] += a[i + l] * b[i + l];
  }
  T sum = 0;
  for (int l = 0; l < kLanes; ++l) sum += acc[l];
  for (; i < d; ++i) sum += a[i] * b[i];
  return sum;
}

template <typename T>
inline void axpy(T alpha, const T* __restrict x, T* __restrict y, int64_t d) {
  for (int64_t i = 0; i < d; ++i) y[i] += alpha * x[i];
}

template <typename T>
inline void prefetchRow(const T* row, int64_t d) {
  const char* p = reinterpret_cast<const char*>(row);
  for (int64_t off = 0; off < d * static_cast<int64_t>(sizeof(T)); off += kCacheLine) __builtin_prefetch(p + off);
}

// Visits the rows of sample b — the positive first, then its K negatives — prefetching ahead.
template <typename T, typename Visit>
inline void forEachRow(const T* bank, int64_t D, int64_t positive, const int64_t* negatives, int64_t K, Visit&& visit) {
  for (int64_t k = 0; k < std::min(K, kPrefetchAhead); ++k) prefetchRow(bank + negatives[k] * D, D);
  visit(bank + positive * D, true);
  for (int64_t k = 0; k < K; ++k) {
    if (k + kPrefetchAhead < K) prefetchRow(bank + negatives[k + kPrefetchAhead] * D, D);
    visit(bank + negatives[k] * D, false);
  }
}

// Batch samples per parallel task: each one is K+1 random bank rows, plenty of work.
constexpr int64_t kGrain = 1;

}  // namespace

at::Tensor expSumCpu(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& positives,
                 const at::Tensor& negatives, double tau) {
  const int64_t B = x.size(0), D = x.size(1), K = negatives.size(1);
  std::vector<double> perSample(B);
  const int64_t* pos = positives.data_ptr<int64_t>();
  const int64_t* neg = negatives.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pirl_nce_expsum_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* bp = bank.data_ptr<scalar_t>();
    const scalar_t invTau = static_cast<scalar_t>(1.0 / tau);
    at::parallel_for(0, B, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const scalar_t* xb = xp + b * D;
        double sum = 0;
        forEachRow(bp, D, pos[b], neg + b * K, K, [&](const scalar_t* row, bool) {
          sum += std::exp(static_cast<double>(dot(xb, row, D) * invTau));
        });
        perSample[b] = sum;
      }
    });
  });
  double total = 0;
  for (double s : perSample) total += s;
  return at::scalar_tensor(total, at::kDouble);
}

FusedResult fusedNceCpu(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& positives,
                        const at::Tensor& negatives, double tau, Mode mode, double logNoise) {
  const int64_t B = x.size(0), D = x.size(1), K = negatives.size(1);
  at::Tensor rowLoss = at::empty({B}, x.options());
  at::Tensor grad = at::zeros({B, D}, x.options());
  std::vector<double> perSample(B);
  const int64_t* pos = positives.data_ptr<int64_t>();
  const int64_t* neg = negatives.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pirl_nce_fused_cpu", [&] {
    using T = scalar_t;
    const T* xp = x.data_ptr<T>();
    const T* bp = bank.data_ptr<T>();
    T* lp = rowLoss.data_ptr<T>();
    T* gp = grad.data_ptr<T>();
    const T invTau = static_cast<T>(1.0 / tau);
    const T gradScale = static_cast<T>(1.0 / (tau * static_cast<double>(B)));
    const T c = static_cast<T>(logNoise);
    at::parallel_for(0, B, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const T* xb = xp + b * D;
        T* gb = gp + b * D;
        const T* positiveRow = bp + pos[b] * D;
        double expSum = 0;
        if (mode == Mode::Nce) {
          // u = s/τ − log(K·Z/N); −log h = softplus(−u), −log(1−h) = softplus(u); dL/ds = (σ(u) − [pos])/τ.
          // One exp per score: with e = e^{−|u|}, softplus(±u) = max(±u, 0) + log1p(e), σ(u) and
          // e^{s/τ} = e^{u}·K·Z/N all follow from e.
          const double noise = std::exp(static_cast<double>(c));
          double loss = 0;  // K+1 terms: a float32 sum of 32,000 lost digits
          forEachRow(bp, D, pos[b], neg + b * K, K, [&](const T* row, bool isPositive) {
            const T u = dot(xb, row, D) * invTau - c;
            const T e = std::exp(-std::abs(u));
            const T logTerm = std::log1p(e);
            const T sigma = u >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);
            expSum += scoreExp(u, e, noise);
            loss += (isPositive ? std::max(-u, T(0)) : std::max(u, T(0))) + logTerm;
            axpy((sigma - (isPositive ? T(1) : T(0))) * gradScale, row, gb, D);
          });
          lp[b] = static_cast<T>(loss);
        } else {
          // Online softmax: running max m, normaliser l and Σ p·row in gb, rescaled when m grows.
          T m = -std::numeric_limits<T>::infinity(), tPositive = 0;
          double l = 0;  // the normaliser of K+1 terms, summed in double as the NCE loss is
          forEachRow(bp, D, pos[b], neg + b * K, K, [&](const T* row, bool isPositive) {
            const T t = dot(xb, row, D) * invTau;
            if (isPositive) tPositive = t;
            if (t > m) {
              const T scale = std::exp(m - t);
              l = l * scale + 1;
              for (int64_t i = 0; i < D; ++i) gb[i] = gb[i] * scale + row[i];
              m = t;
            } else {
              const T w = std::exp(t - m);
              l += w;
              axpy(w, row, gb, D);
            }
          });
          lp[b] = static_cast<T>(static_cast<double>(m) + std::log(l) - static_cast<double>(tPositive));
          expSum = l * std::exp(static_cast<double>(m));
          // dL/dx = (Σ_k p_k row_k − row_pos) / τ, averaged over the batch.
          const T norm = static_cast<T>(l);
          for (int64_t i = 0; i < D; ++i) gb[i] = (gb[i] / norm - positiveRow[i]) * gradScale;
        }
        perSample[b] = expSum;
      }
    });
  });
  double total = 0;
  for (double s : perSample) total += s;
  return {rowLoss, grad, at::scalar_tensor(total, at::kDouble)};
}

}  // namespace pirl::nce
