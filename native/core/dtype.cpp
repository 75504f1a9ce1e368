#include "dtype.h"

#include <limits>
#include <stdexcept>

namespace pirl {

namespace {
struct DtypeName {
  c10::ScalarType type;
  const char* name;
};
constexpr DtypeName kDtypes[] = {
    {c10::ScalarType::Float, "float32"}, {c10::ScalarType::Double, "float64"}, {c10::ScalarType::Int, "int32"},
    {c10::ScalarType::Long, "int64"},    {c10::ScalarType::Byte, "uint8"},
};
}  // namespace

c10::ScalarType dtypeFromName(const std::string& name) {
  for (const auto& d : kDtypes) {
    if (name == d.name) return d.type;
  }
  throw std::invalid_argument("dtype must be one of float32, float64, int32, int64, uint8; got '" + name + "'");
}

std::string dtypeName(c10::ScalarType type) {
  for (const auto& d : kDtypes) {
    if (type == d.type) return d.name;
  }
  return c10::toString(type);
}

int64_t checkedNumel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    const int64_t d = shape[i];
    if (d < 0) {
      throw std::out_of_range("shape[" + std::to_string(i) + "] must be >= 0, got " + std::to_string(d));
    }
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) {
      throw std::out_of_range("shape " + shapeString(shape) + " has more elements than int64 can count");
    }
    n *= d;
  }
  return n;
}

std::string shapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace pirl
