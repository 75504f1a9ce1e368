#include <gtest/gtest.h>

#include <limits>
#include <stdexcept>

#include "core/dtype.h"

namespace {

TEST(Dtype, NamesRoundTrip) {
  for (const char* name : {"float32", "float64", "int32", "int64", "uint8"}) {
    EXPECT_EQ(pirl::dtypeName(pirl::dtypeFromName(name)), name);
  }
  EXPECT_EQ(pirl::dtypeFromName("float32"), c10::ScalarType::Float);
  EXPECT_EQ(pirl::dtypeFromName("int64"), c10::ScalarType::Long);
}

TEST(Dtype, UnknownNameIsATypeErrorNamingIt) {
  try {
    pirl::dtypeFromName("float16");
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'float16'"), std::string::npos) << e.what();
  }
}

TEST(Dtype, CheckedNumel) {
  EXPECT_EQ(pirl::checkedNumel({}), 1);
  EXPECT_EQ(pirl::checkedNumel({2, 3, 4}), 24);
  EXPECT_EQ(pirl::checkedNumel({5, 0, 7}), 0);
  EXPECT_THROW(pirl::checkedNumel({2, -1}), std::out_of_range);
  const int64_t big = std::numeric_limits<int64_t>::max() / 2;
  EXPECT_THROW(pirl::checkedNumel({big, 3}), std::out_of_range);
}

TEST(Dtype, ShapeString) { EXPECT_EQ(pirl::shapeString({2, 3}), "[2, 3]"); }

}  // namespace
