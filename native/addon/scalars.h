// Scalars of a native result read for JavaScript.
#pragma once

#include <ATen/ATen.h>

#include <initializer_list>
#include <vector>

namespace pirl::addon {

// 0-dim tensors (any device, any floating dtype) as doubles, in one read of the device. Called on the
// worker thread: a GPU result read on the JavaScript thread would block the event loop until the GPU is done.
inline std::vector<double> readScalars(std::initializer_list<at::Tensor> scalars) {
  std::vector<at::Tensor> parts;
  parts.reserve(scalars.size());
  for (const at::Tensor& s : scalars) parts.push_back(s.detach().to(at::kDouble).reshape({1}));
  const at::Tensor host = at::cat(parts).cpu();
  const double* values = host.data_ptr<double>();
  return std::vector<double>(values, values + host.numel());
}

}  // namespace pirl::addon
