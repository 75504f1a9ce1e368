// Binding of the fused NCE op (core/nce).
#pragma once

#include <ATen/ATen.h>
#include <napi.h>

namespace pirl::addon {

// A detached leaf copy of `t` that collects d(loss)/d(t) when a loss computed from it runs backward.
inline at::Tensor gradientLeaf(const at::Tensor& t) { return t.detach().requires_grad_(true); }

void registerNce(Napi::Env env, Napi::Object exports);

}  // namespace pirl::addon
