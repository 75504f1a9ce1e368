// Whether an op validates the row indices it is given — a read of the device when they live on a GPU —
// or trusts its caller, who validated them on the host or made them itself (the bank's own sampler).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace pirl {

enum class IndexCheck { Check, Trusted };

// `index` (int64) holds rows of a table of `numRows`; an error naming `name` and the range found otherwise.
inline void checkRows(const at::Tensor& index, const char* name, int64_t numRows) {
  TORCH_CHECK_TYPE(index.scalar_type() == at::kLong, name, " must be int64, got ", index.scalar_type());
  if (index.numel() == 0) return;
  const auto [lo, hi] = at::aminmax(index);
  const at::Tensor range = at::stack({lo, hi}).cpu();  // one device read for both
  const int64_t min = range[0].item<int64_t>(), max = range[1].item<int64_t>();
  TORCH_CHECK_INDEX(min >= 0 && max < numRows, name, " must be rows in [0, ", numRows, "), got values in [", min,
                    ", ", max, "]");
}

}  // namespace pirl
