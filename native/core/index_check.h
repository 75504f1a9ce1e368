// Whether an op validates the row indices it is given — a read of the device when they live on a GPU —
// or trusts its caller, who validated them on the host or made them itself (the bank's own sampler).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "device_numbers.h"

namespace pirl {

enum class IndexCheck { Check, Trusted };

// `index` (int64) holds rows of a table of `numRows`, checked in two halves so that a caller reads the device
// once for all its checks: addRowRange gathers its min and max into `numbers`, checkRowRange (after the read)
// says what was found if any row is out of range.
inline size_t addRowRange(DeviceNumbers& numbers, const at::Tensor& index, const char* name) {
  TORCH_CHECK_TYPE(index.scalar_type() == at::kLong, name, " must be int64, got ", index.scalar_type());
  if (index.numel() == 0) return 0;
  const auto [lo, hi] = at::aminmax(index);
  return numbers.add(at::stack({lo, hi}));
}

inline void checkRowRange(const DeviceNumbers& numbers, size_t slot, const at::Tensor& index, const char* name,
                          int64_t numRows) {
  if (index.numel() == 0) return;
  const int64_t min = numbers.integer(slot), max = numbers.integer(slot + 1);
  TORCH_CHECK_INDEX(min >= 0 && max < numRows, name, " must be rows in [0, ", numRows, "), got values in [", min,
                    ", ", max, "]");
}

// Both halves, for a caller with nothing else to read.
inline void checkRows(const at::Tensor& index, const char* name, int64_t numRows) {
  DeviceNumbers numbers;
  const size_t slot = addRowRange(numbers, index, name);
  numbers.read();
  checkRowRange(numbers, slot, index, name, numRows);
}

}  // namespace pirl
