// The CUDA training step reads the device once per step: counted with libtorch's sync debug mode,
// which warns at every host synchronisation; fp16's skipped step; one NCCL rank trains as a process alone.
// Compiled in CUDA builds of libtorch 2 (its warning handler API) only; skipped without a GPU.
#include <torch/version.h>
#if defined(PIRL_WITH_CUDA) && TORCH_VERSION_MAJOR >= 2
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/distributed/communicator.h"
#include "core/train/train_state.h"
#include "presets.h"
#include "rendezvous.h"

namespace {

using namespace pirl;

// Counts the synchronisation warnings raised while it is installed.
class SyncCounter : public c10::WarningHandler {
 public:
  void process(const c10::Warning& warning) override {
    if (std::string(warning.msg()).find("synchroniz") != std::string::npos) ++count;
  }
  int count = 0;
};

// A small ResNet-18 run on the GPU: the model, its bank, and the training state over them.
struct CudaRun {
  model::PirlModel net;
  std::shared_ptr<MemoryBank> bank;
  std::unique_ptr<train::TrainState> state;
};

CudaRun cudaRun(nce::Mode mode, ZMode zMode, train::Precision precision) {
  const c10::Device cuda(c10::kCUDA, 0);
  model::PirlModelOptions o = pirl::testing::modelOptions(model::Arch::ResNet18, model::Stem::Small, 0.25);
  o.embeddingDim = 16;
  model::PirlModel net(o);
  net->to(cuda);
  PirlLossOptions loss = pirl::testing::paperLoss();
  loss.numNegatives = 64;
  loss.mode = mode;
  loss.zMode = zMode;
  auto bank = std::make_shared<MemoryBank>(200, 16, 1, cuda);
  auto state = std::make_unique<train::TrainState>(net, bank, loss, train::StepOptions{pirl::testing::paperSgd(), precision, /*seed=*/1});
  return {net, bank, std::move(state)};
}

double syncsPerStep(nce::Mode mode, ZMode zMode, train::Precision precision) {
  at::manual_seed(3);
  CudaRun run = cudaRun(mode, zMode, precision);
  const at::Tensor images = at::randn({8, 3, 16, 16}).pin_memory();
  const at::Tensor patches = at::randn({8, 9, 3, 8, 8}).pin_memory();
  const at::Tensor indices = at::arange(8, at::kLong);
  for (int i = 0; i < 2; ++i) run.state->step(images, patches, indices, 0.01);  // warm-up, Z estimated
  SyncCounter counter;
  c10::WarningUtils::WarningHandlerGuard guard(&counter);
  c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_WARN);
  for (int i = 0; i < 3; ++i) run.state->step(images, patches, indices, 0.01);
  c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_DISABLED);
  return counter.count / 3.0;  // one extra read in three steps shows
}

TEST(TrainStateCuda, ReadsTheDeviceOncePerStep) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  EXPECT_DOUBLE_EQ(syncsPerStep(nce::Mode::InfoNce, ZMode::Ema, train::Precision::Fp32), 1);
  EXPECT_DOUBLE_EQ(syncsPerStep(nce::Mode::InfoNce, ZMode::Ema, train::Precision::Bf16), 1);
  EXPECT_DOUBLE_EQ(syncsPerStep(nce::Mode::Nce, ZMode::Frozen, train::Precision::Fp32), 1);
  // An EMA of Z: each term's batch estimate is read with the losses.
  EXPECT_DOUBLE_EQ(syncsPerStep(nce::Mode::Nce, ZMode::Ema, train::Precision::Fp32), 1);
}

TEST(TrainStateCuda, Fp16SkipsAnOverflowingStepAndHalvesTheScale) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(5);
  CudaRun run = cudaRun(nce::Mode::Nce, ZMode::Frozen, train::Precision::Fp16);
  auto& state = *run.state;
  auto& bank = run.bank;
  auto& net = run.net;
  state.scaler().restore(1e30, 0);  // a scale no fp16 gradient survives
  const at::Tensor rows = bank->rows().clone();
  const at::Tensor before = net->trunk->conv1->weight.detach().clone();
  const auto r = state.step(at::randn({8, 3, 16, 16}), at::randn({8, 9, 3, 8, 8}), at::arange(8, at::kLong), 0.01);
  EXPECT_FALSE(r.applied);
  EXPECT_EQ(state.scaler().scale(), 5e29);
  EXPECT_TRUE(at::equal(net->trunk->conv1->weight.detach(), before));
  EXPECT_TRUE(at::equal(bank->rows(), rows));
  state.scaler().restore(1024, 0);
  EXPECT_TRUE(state.step(at::randn({8, 3, 16, 16}), at::randn({8, 9, 3, 8, 8}), at::arange(8, at::kLong), 0.01).applied);
}

// A data-parallel run of one rank on NCCL (the GPU host has one GPU) takes the steps of the process alone:
// the same losses to float rounding (the collectives of one rank are copies, SyncBatchNorm's sums too).
TEST(TrainStateCuda, OneNcclRankTrainsAsTheProcessAlone) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  if (!distributed::ncclAvailable()) GTEST_SKIP() << "this pirl was built without NCCL (see the build's 'pirl: NCCL' line)";
  std::vector<double> losses[2];
  for (int distributedRun = 0; distributedRun < 2; ++distributedRun) {
    at::manual_seed(5);
    CudaRun run = cudaRun(nce::Mode::InfoNce, ZMode::Ema, train::Precision::Fp32);
    if (distributedRun) {
      auto c = std::make_shared<distributed::Communicator>(
          distributed::CommunicatorOptions{pirl::test::freshRendezvousFile(), "127.0.0.1", 0, 0, 1, "127.0.0.1", 60000, "cuda:0"});
      EXPECT_EQ(c->device(), c10::Device(c10::kCUDA, 0));
      run.state->distribute(c, /*syncBatchNorm=*/true);
    }
    const at::Generator data = at::make_generator<at::CPUGeneratorImpl>(9);
    for (int step = 0; step < 4; ++step) {
      const at::Tensor images = at::randn({8, 3, 16, 16}, data), patches = at::randn({8, 9, 3, 8, 8}, data);
      losses[distributedRun].push_back(run.state->step(images, patches, at::arange(8, at::kLong) + 8 * step, 0.01).loss);
    }
  }
  for (int step = 0; step < 4; ++step) EXPECT_NEAR(losses[1][step], losses[0][step], 1e-4 * std::abs(losses[0][step])) << step;
}

}  // namespace
#endif
