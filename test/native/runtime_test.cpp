#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include "core/runtime.h"
#include "requires.h"

namespace {

TEST(Runtime, SetNumThreadsReachesOtherThreads) {
  pirl::setNumThreads(2);
  EXPECT_EQ(pirl::numThreads(), 2);
  int seen = 0;
  std::thread worker([&] {
    pirl::applyThreadSettings();
    seen = at::get_num_threads();
  });
  worker.join();
  EXPECT_EQ(seen, 2);

  pirl::setNumThreads(1);
  std::thread again([&] {
    pirl::applyThreadSettings();
    seen = at::get_num_threads();
  });
  again.join();
  EXPECT_EQ(seen, 1);
}

TEST(Runtime, RejectsNonPositiveThreads) { EXPECT_THROW(pirl::setNumThreads(0), std::out_of_range); }

// The default is applied once per process: a second thread loading pirl (a Node Worker) leaves a count set as it is.
TEST(Runtime, ADefaultLeavesACountAlreadySet) {
  pirl::setNumThreads(2);
  EXPECT_FALSE(pirl::setDefaultNumThreads(1));
  EXPECT_EQ(pirl::numThreads(), 2);
  EXPECT_THROW(pirl::setDefaultNumThreads(0), std::out_of_range);
  pirl::setNumThreads(1);
}

TEST(Runtime, DeterministicTurnsBenchmarkModeOffAndBackAsItWas) {
  at::Context& context = at::globalContext();
  const bool benchmark = context.benchmarkCuDNN();
  for (const bool before : {true, false}) {
    context.setBenchmarkCuDNN(before);
    pirl::setDeterministic(true);
    EXPECT_TRUE(pirl::deterministic());
    EXPECT_TRUE(context.deterministicCuDNN());
    EXPECT_FALSE(context.benchmarkCuDNN());
    pirl::setDeterministic(true);  // twice: still what it was before the first
    pirl::setDeterministic(false);
    EXPECT_FALSE(pirl::deterministic());
    EXPECT_FALSE(context.deterministicCuDNN());
    EXPECT_EQ(context.benchmarkCuDNN(), before);
  }
  context.setBenchmarkCuDNN(benchmark);
}

// libtorch reads CUBLAS_WORKSPACE_CONFIG once, at the first cuBLAS product: its refusal in deterministic mode, when the
// variable was set by the time deterministic mode was turned on, says that it came too late (libtorch's words ask to set it).
TEST(Runtime, ACublasRefusalWithTheVariableSetSaysItWasSetTooLate) {
  const char* env = std::getenv("CUBLAS_WORKSPACE_CONFIG");
  const std::optional<std::string> before = env == nullptr ? std::nullopt : std::optional<std::string>(env);
  const std::string refusal = "Deterministic behavior was enabled with either `torch.use_deterministic_algorithms(True)` or "
                              "`at::Context::setDeterministicAlgorithms(true)`, but this operation is not deterministic because it "
                              "uses CuBLAS and you have CUDA >= 10.2. To enable deterministic behavior in this case, you must set "
                              "an environment variable before running your PyTorch application: CUBLAS_WORKSPACE_CONFIG=:4096:8 or "
                              "CUBLAS_WORKSPACE_CONFIG=:16:8.";
  unsetenv("CUBLAS_WORKSPACE_CONFIG");
  pirl::setDeterministic(true);
  EXPECT_EQ(pirl::explainCublasConfig(refusal), refusal);  // unset: libtorch's own words say what to do
  setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8", 1);
  pirl::setDeterministic(true);
  EXPECT_EQ(pirl::explainCublasConfig(refusal), refusal + " (CUBLAS_WORKSPACE_CONFIG is :16:8, but it was set after this process first "
            "used cuBLAS, which reads it once: turn deterministic mode on before any GPU work, or start the process with "
            "CUBLAS_WORKSPACE_CONFIG=:16:8)");
  EXPECT_EQ(pirl::explainCublasConfig("CUDA out of memory"), "CUDA out of memory");
  pirl::setDeterministic(false);
  if (before) setenv("CUBLAS_WORKSPACE_CONFIG", before->c_str(), 1);
  else unsetenv("CUBLAS_WORKSPACE_CONFIG");
}

TEST(Runtime, BuildInfoDescribesTheLoadedLibtorch) {
  const auto info = pirl::buildInfo();
  EXPECT_FALSE(info.libtorchVersion.empty());
  EXPECT_NE(info.libtorchLibrary.find("libtorch"), std::string::npos) << info.libtorchLibrary;
  EXPECT_GE(info.numThreads, 1);
  EXPECT_EQ(info.cudaAvailable, at::hasCUDA());
}

// The GPU check's own case (`ctest -R Cuda` under PIRL_REQUIRE_CUDA=1): its build has pirl's CUDA kernels and
// NCCL and sees a device — else every other CUDA case would skip and the check pass.
TEST(Cuda, TheBuildHasItsKernelsAndNcclAndSeesADevice) {
  const auto info = pirl::buildInfo();
  PIRL_REQUIRE(info.cudaCompiled, "built without pirl's CUDA kernels (a CPU-only libtorch)");
  PIRL_REQUIRE(info.cudaAvailable, "no CUDA device");
  EXPECT_GE(info.cudaDeviceCount, 1);
  PIRL_REQUIRE(info.nccl, "built without NCCL (see the build's 'pirl: NCCL' line)");
}

TEST(Runtime, BlasIsDetectedOnceAMatmulHasRun) {
  at::mm(at::ones({8, 8}), at::ones({8, 8}));
  const auto blas = pirl::detectBlas();
  // Every libtorch build links some BLAS; an unknown one still reports its path.
  EXPECT_NE(blas.kind, pirl::BlasKind::None);
  if (blas.kind != pirl::BlasKind::MKL) {
    EXPECT_FALSE(blas.library.empty());
  }
}

// OpenBLAS's own threads follow the count: they took every core under setNumThreads(1).
TEST(Runtime, OpenBlasThreadsFollowTheCount) {
  at::mm(at::ones({8, 8}), at::ones({8, 8}));
  const auto blas = pirl::detectBlas();
  if (blas.kind != pirl::BlasKind::OpenBLAS) GTEST_SKIP() << "the BLAS loaded is not OpenBLAS: " << blas.library;
  void* library = dlopen(blas.library.c_str(), RTLD_LAZY | RTLD_NOLOAD);
  ASSERT_NE(library, nullptr) << dlerror();
  const auto get = reinterpret_cast<int (*)()>(dlsym(library, "openblas_get_num_threads"));
  ASSERT_NE(get, nullptr);
  pirl::setNumThreads(2);
  EXPECT_EQ(get(), 2);
  pirl::setNumThreads(1);
  EXPECT_EQ(get(), 1);
}

}  // namespace
