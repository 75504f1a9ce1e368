// The rows of an N×D matrix scaled to unit L2 norm, as PIRL's embeddings and bank rows are (a zero row stays zero).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "device_numbers.h"

namespace pirl {

inline at::Tensor unitRows(const at::Tensor& x) {
  // Rows of an autocast layer normalised in fp32: in bf16 their norms were up to 3e-3 off 1 (0.04 of s/τ at τ = 0.07).
  const bool reduced = x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf;
  const at::Tensor y = reduced ? x.to(at::kFloat) : x;
  return y / y.norm(2, 1, true).clamp_min(1e-12);
}

// Gathers what a check of x's rows as unit rows reads: whether every value is finite, the row whose norm is furthest
// from 1, that norm (s(a, b) is the cosine only for unit rows, as the bank's are: rows of another length gave another
// loss, or a bank row of another length, silently).
inline size_t addUnitRowChecks(DeviceNumbers& numbers, const at::Tensor& x) {
  // Summed in double without a double copy of x (a bank update of 200,000 rows made a 205 MB one).
  const at::Tensor norms = at::linalg_vector_norm(x.detach(), 2, at::IntArrayRef{1}, false, at::kDouble);
  const at::Tensor row = (norms - 1).abs().argmax().reshape({1});
  return numbers.add(at::cat({at::isfinite(x).all().to(at::kDouble).reshape({1}), row.to(at::kDouble), norms.index_select(0, row)}));
}

// After numbers.read(): x (named `name`) finite (`finiteWhy` says why it matters there) and of unit rows (`unitWhy`).
inline void checkUnitRows(const DeviceNumbers& numbers, size_t slot, const char* name, const char* finiteWhy,
                          const char* unitWhy = "PIRL's scores are cosines with the bank's unit rows") {
  TORCH_CHECK_VALUE(numbers.real(slot) != 0, name, " must be finite", finiteWhy);
  const double norm = numbers.real(slot + 2);
  TORCH_CHECK_VALUE(std::abs(norm - 1) <= 1e-2,  // a unit row rounded through bfloat16 is off by ~4e-3
                    name, " must hold L2-normalised rows (", unitWhy, "): row ", static_cast<int64_t>(numbers.real(slot + 1)),
                    " has norm ", norm, "; divide each row by its norm first");
}

}  // namespace pirl
