// The rows of an N×D matrix scaled to unit L2 norm, as PIRL's embeddings and bank rows are (a zero row stays zero).
#pragma once

#include <ATen/ATen.h>

namespace pirl {

inline at::Tensor unitRows(const at::Tensor& x) { return x / x.norm(2, 1, true).clamp_min(1e-12); }

}  // namespace pirl
