// DeviceNumbers: what checks read, gathered into one read, each value back in its place and exact.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/device_numbers.h"

namespace {

TEST(DeviceNumbers, GivesBackEachValueExactlyInItsPlace) {
  pirl::DeviceNumbers numbers;
  const int64_t big = std::numeric_limits<int64_t>::max(), small = std::numeric_limits<int64_t>::min();
  const size_t ints = numbers.add(at::tensor({big, small, int64_t{-1}}));
  const size_t reals = numbers.add(at::tensor({0.1, -1e300, std::numeric_limits<double>::infinity(), std::nan("")}));
  const size_t floats = numbers.add(at::tensor({0.1f}));  // float32, widened: its own value, not 0.1
  const size_t flags = numbers.add(at::tensor({1, 0}).to(at::kBool));
  const size_t empty = numbers.add(at::empty({0}, at::kLong));
  const size_t last = numbers.add(at::scalar_tensor(42, at::kLong));
  numbers.read();
  EXPECT_EQ(numbers.size(), 11u);
  EXPECT_EQ(std::vector<int64_t>({numbers.integer(ints), numbers.integer(ints + 1), numbers.integer(ints + 2)}),
            std::vector<int64_t>({big, small, -1}));
  EXPECT_EQ(numbers.real(reals), 0.1);
  EXPECT_EQ(numbers.real(reals + 1), -1e300);
  EXPECT_EQ(numbers.real(reals + 2), std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(numbers.real(reals + 3)));
  EXPECT_EQ(numbers.real(floats), static_cast<double>(0.1f));
  EXPECT_EQ(std::vector<int64_t>({numbers.integer(flags), numbers.integer(flags + 1)}), std::vector<int64_t>({1, 0}));
  EXPECT_EQ(empty, last);  // no values of its own
  EXPECT_EQ(numbers.integer(last), 42);
  EXPECT_THROW(numbers.add(at::zeros({1})), c10::Error);  // after the read: it would never be read
  EXPECT_THROW(numbers.integer(11), std::out_of_range);
}

}  // namespace
