// The CUDA training step reads the device once per step, and a checked loss, NCE op or bank update once: counted
// with libtorch's sync debug mode, which warns at every host synchronisation; fp16's skipped step; one NCCL rank
// trains as a process alone; steps replayed from a CUDA graph take the eager steps' values.
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

#include "core/device_numbers.h"
#include "core/distributed/communicator.h"
#include "core/nce/nce.h"
#include "core/pirl_loss.h"
#include "core/runtime.h"
#include "core/train/step_graph.h"
#include "core/train/train_state.h"
#include "presets.h"
#include "rendezvous.h"
#include "requires.h"

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

// The host synchronisations `work` makes, counted with libtorch's sync debug mode.
template <typename Work>
int syncsIn(Work&& work) {
  SyncCounter counter;
  c10::WarningUtils::WarningHandlerGuard guard(&counter);
  c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_WARN);
  work();
  c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_DISABLED);
  return counter.count;
}

// A small ResNet-18 run on the GPU: the model, its bank, and the training state over them.
struct CudaRun {
  model::PirlModel net;
  std::shared_ptr<MemoryBank> bank;
  std::unique_ptr<train::TrainState> state;
};

CudaRun cudaRun(nce::Mode mode, ZMode zMode, train::Precision precision, bool cudaGraphs = false) {
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
  auto state = std::make_unique<train::TrainState>(net, bank, loss, train::StepOptions{pirl::testing::paperSgd(), precision, /*seed=*/1, cudaGraphs});
  return {net, bank, std::move(state)};
}

double syncsPerStep(nce::Mode mode, ZMode zMode, train::Precision precision, bool cudaGraphs = false) {
  at::manual_seed(3);
  CudaRun run = cudaRun(mode, zMode, precision, cudaGraphs);
  const at::Tensor images = at::randn({8, 3, 16, 16}).pin_memory();
  const at::Tensor patches = at::randn({8, 9, 3, 8, 8}).pin_memory();
  const at::Tensor indices = at::arange(8, at::kLong);
  for (int i = 0; i < 2; ++i) run.state->step(images, patches, indices, 0.01);  // warm-up, Z estimated, captured
  const int syncs = syncsIn([&] {
    for (int i = 0; i < 3; ++i) EXPECT_EQ(run.state->step(images, patches, indices, 0.01).replayed, cudaGraphs);
  });
  return syncs / 3.0;  // one extra read in three steps shows
}

TEST(TrainStateCuda, ReadsTheDeviceOncePerStep) {
  PIRL_REQUIRE(at::hasCUDA(), "no CUDA device");
  EXPECT_DOUBLE_EQ(syncsPerStep(nce::Mode::InfoNce, ZMode::Ema, train::Precision::Fp32), 1);
  EXPECT_DOUBLE_EQ(syncsPerStep(nce::Mode::InfoNce, ZMode::Ema, train::Precision::Bf16), 1);
  EXPECT_DOUBLE_EQ(syncsPerStep(nce::Mode::Nce, ZMode::Frozen, train::Precision::Fp32), 1);
  // An EMA of Z: each term's batch estimate is read with the losses.
  EXPECT_DOUBLE_EQ(syncsPerStep(nce::Mode::Nce, ZMode::Ema, train::Precision::Fp32), 1);
  // Replays of a captured step: the inputs copied in, one launch, the same one read.
  EXPECT_DOUBLE_EQ(syncsPerStep(nce::Mode::InfoNce, ZMode::Ema, train::Precision::Fp32, true), 1);
  EXPECT_DOUBLE_EQ(syncsPerStep(nce::Mode::Nce, ZMode::Frozen, train::Precision::Bf16, true), 1);
}

// A checked call gathers what its checks read: one read each for the loss (indices; f and g finite, of unit
// rows), the NCE op (positives, negatives) and a bank update (indices, fHat finite).
TEST(PirlLossCuda, ChecksReadTheDeviceOnce) {
  PIRL_REQUIRE(at::hasCUDA(), "no CUDA device");
  const c10::Device cuda(c10::kCUDA, 0);
  at::manual_seed(8);
  PirlLossOptions o = pirl::testing::paperLoss();
  o.numNegatives = 32;
  o.zMode = ZMode::Ema;
  PirlLoss loss(o);
  MemoryBank bank(200, 16, 1, cuda);
  const auto unitRows = [&] {
    const at::Tensor r = at::randn({8, 16}, cuda);
    return r / r.norm(2, 1, true);
  };
  const at::Tensor f = unitRows(), g = unitRows(), indices = at::arange(8, at::TensorOptions(at::kLong).device(cuda));
  loss(bank, f, g, indices, IndexCheck::Check, true);  // the first step reads its estimate of Z
  EXPECT_EQ(syncsIn([&] { loss(bank, f, g, indices, IndexCheck::Check, true); }), 1);
  const at::Tensor negatives = at::randint(200, {8, 32}, indices.options());
  EXPECT_EQ(syncsIn([&] { nce::nceLoss(f, bank.rows(), indices, negatives, {o.tau, nce::Mode::Nce, 100.0}, IndexCheck::Check); }), 1);
  EXPECT_EQ(syncsIn([&] { bank.update(indices, f, 0.5, IndexCheck::Check); }), 1);
  // Parts on the host and on the GPU, interleaved: one transfer for the GPU's, each value in its place.
  DeviceNumbers numbers;
  const size_t host = numbers.add(at::arange(3, at::kLong)), gpu = numbers.add(at::full({2}, 2.5, at::TensorOptions(at::kDouble).device(cuda)));
  const size_t more = numbers.add(at::full({1}, -7, at::kLong)), flag = numbers.add(at::isfinite(f).all());
  EXPECT_EQ(syncsIn([&] { numbers.read(); }), 1);
  EXPECT_EQ(std::vector<int64_t>({numbers.integer(host), numbers.integer(host + 2), numbers.integer(more), numbers.integer(flag)}),
            std::vector<int64_t>({0, 2, -7, 1}));
  EXPECT_EQ(std::vector<double>({numbers.real(gpu), numbers.real(gpu + 1)}), std::vector<double>({2.5, 2.5}));
}

TEST(TrainStateCuda, Fp16SkipsAnOverflowingStepAndHalvesTheScale) {
  PIRL_REQUIRE(at::hasCUDA(), "no CUDA device");
  at::manual_seed(5);
  CudaRun run = cudaRun(nce::Mode::Nce, ZMode::Frozen, train::Precision::Fp16);
  auto& state = *run.state;
  auto& bank = run.bank;
  auto& net = run.net;
  state.scaler().restore(1e30, 0);  // a scale no fp16 gradient survives
  const at::Tensor rows = bank->rows().clone();
  const at::Tensor before = net->trunk->conv1->weight.detach().clone();
  const at::Tensor runningVar = net->trunk->bn1->running_var.clone();
  const auto r = state.step(at::randn({8, 3, 16, 16}), at::randn({8, 9, 3, 8, 8}), at::arange(8, at::kLong), 0.01);
  EXPECT_FALSE(r.applied);
  EXPECT_EQ(state.scaler().scale(), 5e29);
  EXPECT_TRUE(at::equal(net->trunk->conv1->weight.detach(), before));
  EXPECT_TRUE(at::equal(net->trunk->bn1->running_var, runningVar));  // the skipped batch's statistics put back
  EXPECT_TRUE(at::equal(bank->rows(), rows));
  state.scaler().restore(1024, 0);
  EXPECT_TRUE(state.step(at::randn({8, 3, 16, 16}), at::randn({8, 9, 3, 8, 8}), at::arange(8, at::kLong), 0.01).applied);
}

// A data-parallel run of one rank on NCCL (the GPU host has one GPU) takes the steps of the process alone. In
// float64, as the CPU's Gloo tests: SyncBatchNorm is another kernel than cuDNN's, and in float32 a ReLU whose
// input lies within rounding of 0 goes the other way in one of the runs (seen on the CPU: one element of
// 32,768, 2e-3 of the first layers' gradients), which these steps grow to a percent in three; the H200 showed it.
TEST(TrainStateCuda, OneNcclRankTrainsAsTheProcessAlone) {
  PIRL_REQUIRE(at::hasCUDA(), "no CUDA device");
  PIRL_REQUIRE(distributed::ncclAvailable(), "this pirl was built without NCCL (see the build's 'pirl: NCCL' line)");
  std::vector<double> losses[2];
  std::vector<at::Tensor> banks;
  for (int distributedRun = 0; distributedRun < 2; ++distributedRun) {
    at::manual_seed(5);
    CudaRun run = cudaRun(nce::Mode::InfoNce, ZMode::Ema, train::Precision::Fp32);
    train::TrainState state = pirl::testing::inFloat64(*run.state, run.state->loss().options(), 1);
    if (distributedRun) {
      auto c = std::make_shared<distributed::Communicator>(
          distributed::CommunicatorOptions{pirl::test::freshRendezvousFile(), "127.0.0.1", 0, 0, 1, "127.0.0.1", 60000, "cuda:0"});
      EXPECT_EQ(c->device(), c10::Device(c10::kCUDA, 0));
      state.distribute(c, /*syncBatchNorm=*/true);
      // bankInit 'features' over one NCCL rank: its shard is the whole bank, sent to itself unchanged.
      EXPECT_EQ(state.bankShard(), (std::pair<int64_t, int64_t>{0, state.bank().size()}));
      const at::Tensor before = state.bank().rows().clone();
      state.shareBankShards();
      EXPECT_TRUE(at::equal(state.bank().rows(), before));
    }
    const at::Generator data = at::make_generator<at::CPUGeneratorImpl>(9);
    for (int step = 0; step < 4; ++step) {
      const at::Tensor images = at::randn({8, 3, 16, 16}, data, at::kDouble), patches = at::randn({8, 9, 3, 8, 8}, data, at::kDouble);
      losses[distributedRun].push_back(state.step(images, patches, at::arange(8, at::kLong) + 8 * step, 0.01).loss);
    }
    banks.push_back(state.bank().rows().cpu());
  }
  for (int step = 0; step < 4; ++step) EXPECT_NEAR(losses[1][step], losses[0][step], 1e-9 * std::abs(losses[0][step])) << step;
  EXPECT_LE((banks[1] - banks[0]).abs().max().item<double>(), 1e-9);
}

// The warnings raised while it is installed (c10::WarningUtils::WarningHandlerGuard), a line each.
struct Warnings : c10::WarningHandler {
  void process(const c10::Warning& warning) override { messages += std::string(warning.msg()) + "\n"; }
  std::string messages;
};

// Runs the same steps eagerly and with CUDA graphs from one seed, over batches of the sizes given (a size
// change recaptures), fp16 at the loss scales given (one per step; else 1024); the graph run's step results, and
// both runs' final weights and banks.
struct GraphComparison {
  std::vector<train::StepResult> eager, graphed;
  at::Tensor eagerWeights, graphedWeights, eagerBank, graphedBank;
};

GraphComparison compareWithGraphs(nce::Mode mode, train::Precision precision, const std::vector<int64_t>& batches,
                                  const std::vector<double>& scales = {}) {
  GraphComparison out;
  // cuDNN's deterministic algorithms: what differs between the runs is then the graph, not atomics' order.
  const bool deterministic = at::globalContext().deterministicCuDNN();
  at::globalContext().setDeterministicCuDNN(true);
  for (const bool graphs : {false, true}) {
    at::manual_seed(11);
    CudaRun run = cudaRun(mode, ZMode::Frozen, precision, graphs);
    run.state->scaler().restore(1024, 0);  // fp16: a scale these gradients never overflow (a skipped step is not taken)
    const at::Generator data = at::make_generator<at::CPUGeneratorImpl>(13);
    int64_t row = 0;
    for (size_t step = 0; step < batches.size(); ++step) {
      const int64_t b = batches[step];
      if (!scales.empty()) run.state->scaler().restore(scales.at(step), 0);
      const at::Tensor images = at::randn({b, 3, 16, 16}, data).pin_memory(), patches = at::randn({b, 9, 3, 8, 8}, data).pin_memory();
      (graphs ? out.graphed : out.eager).push_back(run.state->step(images, patches, (at::arange(b, at::kLong) + row) % 200, 0.05));
      row += b;
    }
    std::vector<at::Tensor> weights;
    for (const auto& p : run.net->parameters()) weights.push_back(p.detach().flatten().cpu());
    (graphs ? out.graphedWeights : out.eagerWeights) = at::cat(weights);
    (graphs ? out.graphedBank : out.eagerBank) = run.bank->rows().cpu();
  }
  at::globalContext().setDeterministicCuDNN(deterministic);
  return out;
}

// The graph replays the eager step's kernels (cuDNN's choices included), so the runs differ at most by what
// kernels leave to the order of atomic adds: float rounding, grown over the steps.
void expectGraphsFollowEagerSteps(const GraphComparison& c, const std::vector<bool>& replayed, double tolerance) {
  ASSERT_EQ(c.graphed.size(), replayed.size());
  for (size_t i = 0; i < replayed.size(); ++i) {
    EXPECT_EQ(c.graphed[i].replayed, replayed[i]) << "step " << i;
    EXPECT_FALSE(c.eager[i].replayed) << "step " << i;
    EXPECT_NEAR(c.graphed[i].loss, c.eager[i].loss, tolerance * std::abs(c.eager[i].loss)) << "step " << i;
    EXPECT_NEAR(c.graphed[i].gradNorm, c.eager[i].gradNorm, tolerance * c.eager[i].gradNorm) << "step " << i;
  }
  const double weightScale = c.eagerWeights.abs().max().item<double>();
  EXPECT_LE((c.graphedWeights - c.eagerWeights).abs().max().item<double>(), tolerance * weightScale);
  EXPECT_LE((c.graphedBank - c.eagerBank).abs().max().item<double>(), tolerance);
}

TEST(TrainStateCuda, GraphReplaysTakeTheEagerSteps) {
  PIRL_REQUIRE(at::hasCUDA(), "no CUDA device");
  const std::vector<int64_t> eight(6, 8);
  // InfoNCE: the first step runs eagerly and captures, the rest replay.
  expectGraphsFollowEagerSteps(compareWithGraphs(nce::Mode::InfoNce, train::Precision::Fp32, eight),
                               {false, true, true, true, true, true}, 1e-4);
  // NCE: the first step estimates Z (no capture), the second captures with it.
  expectGraphsFollowEagerSteps(compareWithGraphs(nce::Mode::Nce, train::Precision::Fp32, eight),
                               {false, false, true, true, true, true}, 1e-4);
  // bf16 and fp16 round an activation at 2^-8 and 2^-11: the runs' float32 differences (atomics) move some
  // across a rounding step, and six steps grow that to 1.4% of a gradient norm (seen on the H200).
  expectGraphsFollowEagerSteps(compareWithGraphs(nce::Mode::Nce, train::Precision::Bf16, eight),
                               {false, false, true, true, true, true}, 3e-2);
  expectGraphsFollowEagerSteps(compareWithGraphs(nce::Mode::Nce, train::Precision::Fp16, eight),
                               {false, false, true, true, true, true}, 3e-2);
}

TEST(TrainStateCuda, GraphsRecaptureWhenTheBatchSizeChanges) {
  PIRL_REQUIRE(at::hasCUDA(), "no CUDA device");
  expectGraphsFollowEagerSteps(compareWithGraphs(nce::Mode::InfoNce, train::Precision::Fp32, {8, 8, 4, 4, 8, 8}),
                               {false, true, false, true, false, true}, 1e-4);
}

// A batch shrunk by an unreadable image (no decode cache) every other step recaptured at every step: past the
// CaptureBudget the run goes on eagerly, saying why.
TEST(TrainStateCuda, GraphsTurnOffWhenTheBatchShapeKeepsChanging) {
  PIRL_REQUIRE(at::hasCUDA(), "no CUDA device");
  Warnings warnings;
  c10::WarningUtils::WarningHandlerGuard collect(&warnings);
  expectGraphsFollowEagerSteps(compareWithGraphs(nce::Mode::InfoNce, train::Precision::Fp32, {8, 7, 8, 7, 8, 8, 8}),
                               std::vector<bool>(7, false), 1e-4);
  EXPECT_NE(warnings.messages.find("keep changing shape"), std::string::npos) << warnings.messages;
}

// The fp16 loss scale is one of the graph's inputs: its halvings and doublings replay. A scale baked into the capture
// would scale the replayed gradients by the old one and unscale them by the new one (the gradient norm 2× off).
TEST(TrainStateCuda, GraphsReplayAcrossLossScaleChanges) {
  PIRL_REQUIRE(at::hasCUDA(), "no CUDA device");
  expectGraphsFollowEagerSteps(compareWithGraphs(nce::Mode::InfoNce, train::Precision::Fp16, std::vector<int64_t>(6, 8),
                                                 {1024, 1024, 1024, 512, 2048, 2048}),
                               {false, true, true, true, true, true}, 3e-2);
}

TEST(TrainStateCuda, GraphsRecaptureWhenTheTf32SettingsChange) {
  PIRL_REQUIRE(at::hasCUDA(), "no CUDA device");
  at::manual_seed(7);
  CudaRun run = cudaRun(nce::Mode::InfoNce, ZMode::Ema, train::Precision::Fp32, /*cudaGraphs=*/true);
  const auto step = [&] {
    return run.state->step(at::randn({8, 3, 16, 16}), at::randn({8, 9, 3, 8, 8}), at::arange(8, at::kLong), 0.01);
  };
  const Tf32 before = tf32();
  EXPECT_FALSE(step().replayed);
  EXPECT_TRUE(step().replayed);
  setTf32({!before.convolutions, before.matmul});  // chosen on the host as kernels are: baked into the capture
  EXPECT_FALSE(step().replayed);
  EXPECT_TRUE(step().replayed);
  setTf32(before);
  EXPECT_FALSE(step().replayed);
}

// A body that reads the device inside the capture (what a graph cannot hold) invalidates it: the step's work
// comes from the warm-up, a warning is raised, the stream's capture is ended (the thread allocates and reads the
// device again) and later steps run eagerly.
TEST(StepGraphCuda, AFailedCaptureIsEndedAndTheRunGoesOnEagerly) {
  PIRL_REQUIRE(at::hasCUDA(), "no CUDA device");
  train::StepGraph graph(c10::Device(c10::kCUDA, 0));
  int calls = 0;
  const auto body = [&](const std::vector<at::Tensor>& in) {
    ++calls;
    const double total = in[0].sum().item<double>();  // a host read: illegal while capturing
    return std::vector<at::Tensor>{in[0] * 2 + total};
  };
  const at::Tensor x = at::arange(4, at::TensorOptions(at::kFloat).device(at::kCUDA));
  Warnings warnings;
  c10::WarningUtils::WarningHandlerGuard collect(&warnings);
  const auto key = [] { return std::vector<int64_t>{}; };
  const std::vector<at::Tensor> first = graph.run({x}, key, body);
  EXPECT_FALSE(graph.replayed());
  EXPECT_TRUE(at::equal(first[0].cpu(), at::tensor({6.0f, 8.0f, 10.0f, 12.0f}))) << "the warm-up's result";
  const at::Tensor after = at::ones({1 << 20}, at::TensorOptions(at::kFloat).device(at::kCUDA)).sum().cpu();
  EXPECT_EQ(after.item<float>(), static_cast<float>(1 << 20)) << "the thread allocates and reads the device again";
  const std::vector<at::Tensor> second = graph.run({x}, key, body);
  EXPECT_FALSE(graph.replayed());
  EXPECT_TRUE(at::equal(second[0].cpu(), first[0].cpu()));
  EXPECT_EQ(calls, 3) << "warm-up, the failed capture, then one eager run";
  EXPECT_NE(warnings.messages.find("capturing the training step as a CUDA graph failed"), std::string::npos) << warnings.messages;
}

TEST(TrainStateCuda, GraphsRefuseDataParallelRuns) {
  PIRL_REQUIRE(at::hasCUDA(), "no CUDA device");
  PIRL_REQUIRE(distributed::ncclAvailable(), "this pirl was built without NCCL");
  CudaRun run = cudaRun(nce::Mode::InfoNce, ZMode::Ema, train::Precision::Fp32, /*cudaGraphs=*/true);
  auto c = std::make_shared<distributed::Communicator>(
      distributed::CommunicatorOptions{pirl::test::freshRendezvousFile(), "127.0.0.1", 0, 0, 1, "127.0.0.1", 60000, "cuda:0"});
  try {
    run.state->distribute(c, /*syncBatchNorm=*/false);
    FAIL() << "distribute accepted a state with cudaGraphs";
  } catch (const c10::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("without cudaGraphs"), std::string::npos) << e.what();
  }
}

}  // namespace
#endif
