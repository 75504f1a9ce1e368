#include "precision.h"

#include <ATen/autocast_mode.h>
#include <c10/util/Exception.h>
#include <torch/version.h>

#include <cmath>

namespace pirl::train {

namespace {

at::ScalarType dtypeOf(Precision p) { return p == Precision::Bf16 ? at::kBFloat16 : at::kHalf; }

// libtorch 2.4 made autocast's switches per device type; 1.13 has one pair per device.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool enabled(c10::DeviceType d) { return at::autocast::is_autocast_enabled(d); }
void setEnabled(c10::DeviceType d, bool on) { at::autocast::set_autocast_enabled(d, on); }
at::ScalarType dtype(c10::DeviceType d) { return at::autocast::get_autocast_dtype(d); }
void setDtype(c10::DeviceType d, at::ScalarType t) { at::autocast::set_autocast_dtype(d, t); }
#else
bool enabled(c10::DeviceType d) { return d == c10::kCPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled(); }
void setEnabled(c10::DeviceType d, bool on) {
  if (d == c10::kCPU) at::autocast::set_cpu_enabled(on);
  else at::autocast::set_enabled(on);
}
at::ScalarType dtype(c10::DeviceType d) {
  return d == c10::kCPU ? at::autocast::get_autocast_cpu_dtype() : at::autocast::get_autocast_gpu_dtype();
}
void setDtype(c10::DeviceType d, at::ScalarType t) {
  if (d == c10::kCPU) at::autocast::set_autocast_cpu_dtype(t);
  else at::autocast::set_autocast_gpu_dtype(t);
}
#endif

}  // namespace

AutocastScope::AutocastScope(c10::DeviceType device, Precision precision)
    : device_(device), active_(precision != Precision::Fp32) {
  if (!active_) return;
  TORCH_CHECK_VALUE(device == c10::kCPU || device == c10::kCUDA, "mixed precision runs on the CPU or CUDA, not ", device);
  TORCH_CHECK_VALUE(!(device == c10::kCPU && precision == Precision::Fp16),
                    "fp16 autocast needs a CUDA device; on the CPU use bf16");
  wasEnabled_ = enabled(device);
  previousDtype_ = dtype(device);
  setEnabled(device, true);
  setDtype(device, dtypeOf(precision));
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  setEnabled(device_, wasEnabled_);
  setDtype(device_, previousDtype_);
}

LossScaler::LossScaler(double initialScale, int64_t growthInterval)
    : scale_(initialScale), growthInterval_(growthInterval) {
  TORCH_CHECK_VALUE(initialScale > 0 && std::isfinite(initialScale), "the loss scale must be positive, got ", initialScale);
  TORCH_CHECK_VALUE(growthInterval >= 1, "growthInterval must be >= 1, got ", growthInterval);
}

bool LossScaler::update(bool finite) {
  if (!finite) {
    scale_ *= 0.5;
    goodSteps_ = 0;
    return false;
  }
  if (++goodSteps_ >= growthInterval_) {
    scale_ *= 2;
    goodSteps_ = 0;
  }
  return true;
}

void LossScaler::restore(double scale, int64_t goodSteps) {
  TORCH_CHECK_VALUE(scale > 0 && std::isfinite(scale), "the loss scale must be positive, got ", scale);
  TORCH_CHECK_VALUE(goodSteps >= 0, "goodSteps must be >= 0, got ", goodSteps);
  scale_ = scale;
  goodSteps_ = goodSteps;
}

}  // namespace pirl::train
