#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

namespace pirl::testing {

// Set by the GPU check (.ci/device-check.sh): there a case that would skip for want of CUDA or NCCL fails
// instead — a build or host that lost them must not pass with every GPU case skipped.
inline bool cudaRequired() {
  const char* v = std::getenv("PIRL_REQUIRE_CUDA");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

}  // namespace pirl::testing

// In a test body: skips (or, under PIRL_REQUIRE_CUDA=1, fails) when `present` is false, saying `why`.
#define PIRL_REQUIRE(present, why)                                                      \
  do {                                                                                  \
    if (!(present)) {                                                                   \
      if (pirl::testing::cudaRequired()) FAIL() << (why) << " (PIRL_REQUIRE_CUDA=1)"; \
      GTEST_SKIP() << (why);                                                            \
    }                                                                                   \
  } while (false)
