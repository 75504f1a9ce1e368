// The keyed draws of negatives (core/negatives): the values of an independent implementation, uniformity,
// independence from the thread count, argument errors; on a GPU, the same integers as the CPU.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cmath>

#include "core/memory_bank.h"
#include "core/negatives/negative_streams.h"
#include "core/splitmix.h"
#include "requires.h"

namespace {

using pirl::negatives::drawKeyed;
using pirl::negatives::drawStream;

// Expected values from a separate Python implementation (big integers): with G = 0x9e3779b97f4a7c15,
// sm = splitmix64, stream = sm(seed ^ sm(key)) (drawStream: given), value j = (sm(stream + j·G) · bound) >> 64.
TEST(NegativeStreams, ValuesOfAnIndependentImplementation) {
  const at::Tensor d = drawKeyed(at::tensor({5, 900}, at::kLong), 11, 32000, 1281167);
  EXPECT_EQ(d[0][0].item<int64_t>(), 235624);
  EXPECT_EQ(d[0][1].item<int64_t>(), 519762);
  EXPECT_EQ(d[0][2].item<int64_t>(), 177309);
  EXPECT_EQ(d[0][31999].item<int64_t>(), 347462);
  EXPECT_EQ(d[1][0].item<int64_t>(), 474219);
  EXPECT_EQ(d[1][31999].item<int64_t>(), 1097097);
  EXPECT_TRUE(at::equal(drawStream(pirl::splitmix64(11), 4, 1000, at::kCPU), at::tensor({570, 266, 195, 822}, at::kLong)));
  // Bounds beyond 32 bits: the 128-bit product's high half.
  const at::Tensor big = drawKeyed(at::tensor({7}, at::kLong), 11, 2, (int64_t{1} << 62) + 3);
  EXPECT_EQ(big[0][0].item<int64_t>(), 3495974999264998528);
  EXPECT_EQ(big[0][1].item<int64_t>(), 122178417819442495);
}

TEST(NegativeStreams, UniformInRangeWhateverTheThreads) {
  const at::Tensor keys = at::arange(64, at::kLong) * 1009;
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const at::Tensor one = drawKeyed(keys, 3, 40000, 1000);
  at::set_num_threads(std::max(threads, 2));
  const at::Tensor many = drawKeyed(keys, 3, 40000, 1000);
  at::set_num_threads(threads);
  EXPECT_TRUE(at::equal(one, many));
  EXPECT_GE(many.min().item<int64_t>(), 0);
  EXPECT_LE(many.max().item<int64_t>(), 999);
  // 2,560,000 draws over 1000 values: a chi-square with 999 degrees of freedom (mean 999, sd ~45).
  const at::Tensor counts = at::bincount(many.reshape(-1), {}, 1000).to(at::kDouble);
  const double expected = 2560.0, chi2 = ((counts - expected).pow(2) / expected).sum().item<double>();
  EXPECT_LT(chi2, 999 + 6 * std::sqrt(2 * 999.0));
  EXPECT_GT(chi2, 999 - 6 * std::sqrt(2 * 999.0));
  // Neighbouring values of a stream, and neighbouring keys, are not correlated.
  const at::Tensor u = many.to(at::kDouble) / 1000.0 - 0.4995;
  const double lag1 = (u.narrow(1, 0, 39999) * u.narrow(1, 1, 39999)).mean().item<double>() / u.pow(2).mean().item<double>();
  const double keys1 = (u.narrow(0, 0, 63) * u.narrow(0, 1, 63)).mean().item<double>() / u.pow(2).mean().item<double>();
  EXPECT_LT(std::abs(lag1), 0.005);
  EXPECT_LT(std::abs(keys1), 0.005);
  EXPECT_TRUE(drawKeyed(keys, 3, 10, 1).eq(0).all().item<bool>());
}

// Excluding a row: the stream's values in [0, bound − 1), those at or past the row moved up by one.
TEST(NegativeStreams, ExcludingARowStepsOverIt) {
  const at::Tensor keys = at::tensor({3, 8, 3}, at::kLong), exclude = at::tensor({0, 4, 9}, at::kLong);
  const at::Tensor plain = drawKeyed(keys, 5, 20000, 9), stepped = drawKeyed(keys, 5, 20000, 10, exclude);
  EXPECT_TRUE(at::equal(stepped, plain + (plain >= exclude.unsqueeze(1)).to(at::kLong)));
  EXPECT_FALSE((stepped == exclude.unsqueeze(1)).any().item<bool>());
  EXPECT_EQ(stepped.min().item<int64_t>(), 0);
  EXPECT_EQ(stepped.max().item<int64_t>(), 9);
  EXPECT_THROW(drawKeyed(keys, 5, 10, 1, at::tensor({0, 0, 0}, at::kLong)), c10::ValueError);
  EXPECT_THROW(drawKeyed(keys, 5, 10, 10, at::tensor({0, 0}, at::kLong)), c10::ValueError);
}

TEST(NegativeStreams, BadArgumentsAreValueErrors) {
  EXPECT_THROW(drawKeyed(at::tensor({1}, at::kLong), 0, 0, 10), c10::ValueError);
  EXPECT_THROW(drawKeyed(at::tensor({1}, at::kLong), 0, 5, 0), c10::ValueError);
  EXPECT_THROW(drawKeyed(at::tensor({1}, at::kInt), 0, 5, 10), c10::ValueError);
  EXPECT_THROW(drawKeyed(at::zeros({2, 2}, at::kLong), 0, 5, 10), c10::ValueError);
  EXPECT_THROW(drawStream(0, 0, 10, at::kCPU), c10::ValueError);
  EXPECT_EQ(drawKeyed(at::empty({0}, at::kLong), 0, 5, 10).sizes(), (at::IntArrayRef{0, 5}));
}

TEST(NegativeStreamsCuda, TheSameIntegersAsTheCpu) {
  PIRL_REQUIRE(at::hasCUDA(), "no CUDA device (or a CPU-only libtorch): CUDA comparisons skipped");
  const at::Tensor keys = at::randint(1281167, {300}, at::kLong);
  EXPECT_TRUE(at::equal(drawKeyed(keys.cuda(), 9, 4099, 1281167).cpu(), drawKeyed(keys, 9, 4099, 1281167)));
  EXPECT_TRUE(at::equal(drawKeyed(keys.cuda(), 9, 4099, 1281167, keys.cuda()).cpu(), drawKeyed(keys, 9, 4099, 1281167, keys)));
  EXPECT_TRUE(at::equal(drawStream(77, 32000, 1281166, at::kCUDA).cpu(), drawStream(77, 32000, 1281166, at::kCPU)));
  // Through the bank: keys on the host or the device, with and without the positive excluded.
  pirl::MemoryBank cpu(5000, 8, 1), gpu(5000, 8, 1, at::kCUDA);
  const at::Tensor rows = at::randint(5000, {64}, at::kLong);
  for (const at::Tensor& k : {rows, rows.cuda()}) {
    const pirl::NegativeStreams s{123, k};
    EXPECT_TRUE(at::equal(gpu.sampleNegatives(64, 2000, rows.cuda(), s).cpu(), cpu.sampleNegatives(64, 2000, rows, {123, rows})));
    EXPECT_TRUE(at::equal(gpu.sampleNegatives(64, 2000, at::Tensor(), s).cpu(), cpu.sampleNegatives(64, 2000, at::Tensor(), {123, rows})));
    EXPECT_TRUE(at::equal(gpu.sampleShared(3000, s).cpu(), cpu.sampleShared(3000, {123, rows})));
  }
}

}  // namespace
