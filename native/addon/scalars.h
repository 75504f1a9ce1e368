// Scalars of a native result read for JavaScript.
#pragma once

#include <ATen/ATen.h>

#include <initializer_list>
#include <vector>

#include "../core/device_numbers.h"

namespace pirl::addon {

// The values of tensors (any device, any floating dtype; 0-dim for a scalar) as doubles, one after another, in one
// read of the device. Called on the worker thread: a GPU result read on the JavaScript thread would block the event
// loop until the GPU is done.
inline std::vector<double> readScalars(std::initializer_list<at::Tensor> tensors) {
  DeviceNumbers numbers;
  for (const at::Tensor& t : tensors) numbers.add(t.detach().to(at::kDouble));
  numbers.read();
  std::vector<double> values(numbers.size());
  for (size_t i = 0; i < values.size(); ++i) values[i] = numbers.real(i);
  return values;
}

}  // namespace pirl::addon
