// Batches copied to a GPU on a side stream (core/data/side_stream_copy): the CPU hands back its tensors;
// on a GPU (skipped without one) the copies hold the host's values for work queued on the compute stream,
// also while that stream is busy and the copies' memory is freed and reused.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <vector>

#include "core/data/side_stream_copy.h"
#include "requires.h"

namespace {

using pirl::data::copyOnSideStream;

TEST(SideStreamCopy, OnTheCpuTheTensorsThemselves) {
  const at::Tensor a = at::randn({3, 4}), b = at::arange(5);
  const auto out = copyOnSideStream({a, b}, at::kCPU);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(out[0].is_same(a));
  EXPECT_TRUE(out[1].is_same(b));
}

TEST(SideStreamCopyCuda, ValuesReachTheComputeStreamWhileItIsBusy) {
  PIRL_REQUIRE(at::hasCUDA(), "no CUDA device (or a CPU-only libtorch): CUDA copies skipped");
  const at::Tensor busy = at::randn({4096, 4096}, at::kCUDA);
  std::vector<at::Tensor> hosts, sums, expected;
  for (int i = 0; i < 40; ++i) hosts.push_back(at::randn({64, 3, 96, 96}).pin_memory());
  for (int i = 0; i < 40; ++i) {
    // Milliseconds of queued work before each sum: the host runs ahead, so each copy's memory is freed (and
    // offered to the next copy) long before the compute stream reads it.
    for (int j = 0; j < 4; ++j) at::matmul(busy, busy);
    const auto there = copyOnSideStream({hosts[i]}, at::kCUDA);
    ASSERT_TRUE(there[0].is_cuda());
    sums.push_back(there[0].to(at::kDouble).sum());  // queued on the compute stream; `there` is freed next
    expected.push_back(hosts[i].to(at::kDouble).sum());
  }
  for (int i = 0; i < 40; ++i) EXPECT_NEAR(sums[i].item<double>(), expected[i].item<double>(), 1e-6) << "copy " << i;
}

}  // namespace
