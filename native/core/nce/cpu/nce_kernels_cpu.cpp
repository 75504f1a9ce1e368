// CPU kernels of the fused NCE op: parallel over the batch, D-loops written with independent lanes
// so the compiler vectorises them without fast-math.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "../nce_kernels.h"

namespace pirl::nce {

namespace {

constexpr int kLanes = 8;

template <typename T>
inline T dot(const T* a, const T* b, int64_t d) {
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
inline void axpy(T alpha, const T* x, T* y, int64_t d) {
  for (int64_t i = 0; i < d; ++i) y[i] += alpha * x[i];
}

// Batch rows per parallel task: each one is K+1 random bank rows, plenty of work.
constexpr int64_t kGrain = 1;

}  // namespace

at::Tensor scoresCpu(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& index) {
  const int64_t B = index.size(0), K1 = index.size(1), D = x.size(1);
  auto out = at::empty({B, K1}, x.options());
  const int64_t* idx = index.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pirl_nce_scores_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* bp = bank.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, B, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const scalar_t* xb = xp + b * D;
        for (int64_t k = 0; k < K1; ++k) op[b * K1 + k] = dot(xb, bp + idx[b * K1 + k] * D, D);
      }
    });
  });
  return out;
}

at::Tensor weightedRowSumCpu(const at::Tensor& coef, const at::Tensor& bank, const at::Tensor& index) {
  const int64_t B = index.size(0), K1 = index.size(1), D = bank.size(1);
  auto out = at::zeros({B, D}, bank.options());
  const int64_t* idx = index.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(bank.scalar_type(), "pirl_nce_grad_cpu", [&] {
    const scalar_t* cp = coef.data_ptr<scalar_t>();
    const scalar_t* bp = bank.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, B, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        for (int64_t k = 0; k < K1; ++k) axpy(cp[b * K1 + k], bp + idx[b * K1 + k] * D, op + b * D, D);
      }
    });
  });
  return out;
}

}  // namespace pirl::nce
