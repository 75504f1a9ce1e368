// Each case starts as it would in a process of its own (ctest's way), though npm test runs a shard's cases in one
// process: the thread count a case set (pirl::setNumThreads) and the CPU generator's seed are put back after it.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "core/runtime.h"

namespace {

class FreshCase : public ::testing::EmptyTestEventListener {
  void OnTestProgramStart(const ::testing::UnitTest&) override { threads_ = at::get_num_threads(); }

  void OnTestStart(const ::testing::TestInfo&) override {
    // A case that draws without seeding draws what it drew alone, whichever cases ran before it in the shard.
    at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle of the one default generator
    generator.set_current_seed(c10::default_rng_seed_val);
  }

  void OnTestEnd(const ::testing::TestInfo&) override {
    if (pirl::numThreads() != threads_) pirl::setNumThreads(threads_);
  }

  int threads_ = 1;
};

// Registered before main() runs the cases (gtest_main's main; listeners appended before RUN_ALL_TESTS take part).
const bool registered = [] {
  ::testing::UnitTest::GetInstance()->listeners().Append(new FreshCase);
  return true;
}();

}  // namespace
