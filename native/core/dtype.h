// The dtypes pirl exchanges with JavaScript and the checked arithmetic on shapes that guards every
// buffer handed across the boundary.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>
#include <vector>

namespace pirl {

// "float32" | "float64" | "int32" | "int64" | "uint8"; anything else throws std::invalid_argument.
c10::ScalarType dtypeFromName(const std::string& name);
std::string dtypeName(c10::ScalarType type);

// Element count of a shape; throws std::out_of_range for a negative extent or an int64 overflow.
int64_t checkedNumel(const std::vector<int64_t>& shape);

std::string shapeString(const std::vector<int64_t>& shape);

}  // namespace pirl
