// The keyed draws: argument checks, then the device's kernel (cpu/, cuda/).
#include "negative_streams.h"

#include "../dtype.h"

#include <c10/core/DeviceGuard.h>
#include <c10/util/Exception.h>

namespace pirl::negatives {

namespace {

void checkShape(int64_t k, int64_t bound) {
  TORCH_CHECK_VALUE(k >= 1, "k must be >= 1, got ", k);
  TORCH_CHECK_VALUE(bound >= 1, "bound must be >= 1, got ", bound);
}

void draw(const int64_t* keys, const int64_t* exclude, uint64_t seed, int64_t rows, int64_t k, int64_t bound, at::Tensor& out) {
#ifdef PIRL_WITH_CUDA
  if (out.is_cuda()) {
    const c10::DeviceGuard onDevice(out.device());
    drawCuda(keys, exclude, seed, rows, k, bound, out.data_ptr<int64_t>());
    return;
  }
  constexpr const char* kDevices = "the CPU or a CUDA device";
#else
  constexpr const char* kDevices = "the CPU (this build has no CUDA kernels)";
#endif
  TORCH_CHECK_VALUE(out.is_cpu(), "negatives are drawn on ", kDevices, ", got ", out.device());
  drawCpu(keys, exclude, seed, rows, k, bound, out.data_ptr<int64_t>());
}

}  // namespace

at::Tensor drawKeyed(const at::Tensor& keys, uint64_t seed, int64_t k, int64_t bound, const at::Tensor& exclude) {
  checkShape(k, bound);
  TORCH_CHECK_VALUE(keys.dim() == 1 && keys.scalar_type() == at::kLong, "the negatives' stream keys must be B int64 values, got ",
                    keys.sizes(), " ", dtypeName(keys.scalar_type()));
  const at::Tensor key = keys.contiguous();
  at::Tensor excluded;
  if (exclude.defined()) {
    TORCH_CHECK_VALUE(bound >= 2, "excluding a row needs a bound of at least 2, got ", bound);
    TORCH_CHECK_VALUE(exclude.dim() == 1 && exclude.size(0) == key.size(0) && exclude.scalar_type() == at::kLong &&
                          exclude.device() == key.device(),
                      "the rows to exclude must be ", key.size(0), " int64 values on ", key.device(), ", got ", exclude.sizes(),
                      " ", dtypeName(exclude.scalar_type()), " on ", exclude.device());
    excluded = exclude.contiguous();
  }
  at::Tensor out = at::empty({key.size(0), k}, key.options());
  if (key.size(0) > 0) {
    draw(key.data_ptr<int64_t>(), excluded.defined() ? excluded.data_ptr<int64_t>() : nullptr, seed, key.size(0), k, bound, out);
  }
  return out;
}

at::Tensor drawStream(uint64_t stream, int64_t k, int64_t bound, c10::Device device) {
  checkShape(k, bound);
  at::Tensor out = at::empty({k}, at::TensorOptions(at::kLong).device(device));
  draw(nullptr, nullptr, stream, 1, k, bound, out);
  return out;
}

}  // namespace pirl::negatives
