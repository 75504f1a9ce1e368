#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

#include "core/eval/knn.h"
#include "core/eval/linear_probe.h"
#include "core/splitmix.h"
#include "core/train/step_graph.h"
#include "core/train/train_state.h"
#include "presets.h"
#include "requires.h"

namespace {

using namespace pirl;

TEST(Sgd, MatchesTorchOptimSgdWithMomentumAndWeightDecay) {
  at::Tensor w = at::tensor({1.0, -2.0}, at::kDouble).requires_grad_(true);
  at::Tensor b = at::tensor({0.5}, at::kDouble).requires_grad_(true);
  train::Sgd sgd({{"w", w}, {"b", b}}, {true, false}, {0.9, 0.1});
  // step 1: buf = g + wd·p; p -= lr·buf
  w.mutable_grad() = at::tensor({1.0, 1.0}, at::kDouble);
  b.mutable_grad() = at::tensor({2.0}, at::kDouble);
  sgd.step(0.5);
  EXPECT_TRUE(at::allclose(w.detach(), at::tensor({1.0 - 0.5 * 1.1, -2.0 - 0.5 * (1 - 0.2)}, at::kDouble)));
  EXPECT_NEAR(b.item<double>(), 0.5 - 0.5 * 2.0, 1e-12);
  // step 2: buf = 0.9·buf + (g + wd·p)
  const double w0 = w[0].item<double>();
  sgd.step(0.5);
  EXPECT_NEAR(w[0].item<double>(), w0 - 0.5 * (0.9 * 1.1 + 1 + 0.1 * w0), 1e-12);
  EXPECT_TRUE(sgd.momentumBuffers().count("w") && sgd.momentumBuffers().count("b"));
}

TEST(Sgd, RestoredMomentumBuffersTakeTheirParametersLayout) {
  const at::Tensor w = at::randn({4, 3, 2, 2}).contiguous(at::MemoryFormat::ChannelsLast).requires_grad_(true);
  train::Sgd sgd({{"w", w}}, {true}, {0.9, 0.1});
  const at::Tensor saved = at::randn({4, 3, 2, 2}, at::kDouble);  // as a checkpoint holds it: contiguous, float64
  sgd.setMomentumBuffers({{"w", saved}});
  const at::Tensor& buffer = sgd.momentumBuffers().at("w");
  EXPECT_TRUE(buffer.is_contiguous(at::MemoryFormat::ChannelsLast));
  EXPECT_EQ(buffer.strides(), w.strides());
  EXPECT_EQ(buffer.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(buffer, saved.to(at::kFloat)));
  saved.fill_(0);
  EXPECT_FALSE(at::equal(buffer, saved.to(at::kFloat))) << "a copy, not a view of the caller's tensor";
}

// Three captures within 50 steps are what settings changes cost (Z's first value, TF32); a fourth is a shape that keeps
// changing, and ends the graphs. Captures further apart are not counted against each other.
TEST(CaptureBudget, AllowsThreeCapturesWithinFiftySteps) {
  train::CaptureBudget budget;
  EXPECT_TRUE(budget.allow(0));
  EXPECT_TRUE(budget.allow(1));
  EXPECT_TRUE(budget.allow(2));
  EXPECT_FALSE(budget.allow(3));
  train::CaptureBudget spread;
  for (const int64_t step : {0, 30, 49, 50, 80, 99, 100, 130, 149}) EXPECT_TRUE(spread.allow(step)) << step;
  EXPECT_TRUE(spread.allow(150)) << "100 is 50 steps back";
  EXPECT_FALSE(spread.allow(151)) << "130, 149 and 150 are within 50";
}

TEST(TrainState, StepsAreDeterministic) {
  at::manual_seed(99);
  const at::Tensor images = at::randn({8, 3, 16, 16}), patches = at::randn({8, 9, 3, 8, 8});
  const at::Tensor indices = at::arange(8, at::kLong);
  auto a = pirl::testing::tinyTrainState(1, 40), b = pirl::testing::tinyTrainState(1, 40);
  for (int i = 0; i < 4; ++i) {
    const auto ra = a.step(images, patches, indices, 0.05), rb = b.step(images, patches, indices, 0.05);
    EXPECT_EQ(ra.loss, rb.loss) << "step " << i;
    EXPECT_EQ(ra.gradNorm, rb.gradNorm) << "step " << i;
    EXPECT_GT(ra.gradNorm, 0);
  }
  EXPECT_TRUE(at::equal(a.bank().rows(), b.bank().rows()));
}

// A step written out: the loss alone on the model's own forward, backward, SGD's first step by hand (its buffer
// starts at g + wd·w) and the batch's bank rows m ← normalise(μ·m + (1 − μ)·f), f from before the update.
TEST(TrainState, AStepIsTheLossItsGradientSgdAndTheBankUpdateWrittenOut) {
  at::manual_seed(5);
  const at::Tensor images = at::randn({4, 3, 16, 16}), patches = at::randn({4, 9, 3, 8, 8});
  const at::Tensor indices = at::tensor({7, 2, 30, 11}, at::kLong);
  const double lr = 0.1;
  auto s = pirl::testing::tinyTrainState(3, 40), hand = pirl::testing::tinyTrainState(3, 40);
  const at::Tensor w0 = hand.model()->trunk->conv1->weight.detach().clone();
  const at::Tensor rows0 = hand.bank().rows().clone();
  MemoryBank twin(rows0.clone(), hand.bank().generatorState());
  PirlLoss alone(hand.loss().options());
  hand.model()->train();
  const model::Embeddings e = hand.model()->forward(images, patches);
  const PirlLossResult r = alone(twin, e.f, e.g, indices, IndexCheck::Check, false, {splitmix64(splitmix64(3) ^ 0), indices});
  r.loss.backward();
  const at::Tensor grad = hand.model()->trunk->conv1->weight.grad();
  const at::Tensor weight = w0 - lr * (grad + pirl::testing::paperSgd().weightDecay * w0);
  const double mu = alone.options().momentum;
  const at::Tensor moved = mu * rows0.index_select(0, indices) + (1 - mu) * e.f.detach();
  at::Tensor rows = rows0.clone();
  rows.index_copy_(0, indices, moved / moved.norm(2, 1, true));

  const train::StepResult step = s.step(images, patches, indices, lr);
  EXPECT_NEAR(step.loss, r.loss.item<double>(), 1e-6 * std::abs(r.loss.item<double>()));
  ASSERT_GT((weight - w0).abs().max().item<double>(), 1e-4) << "the step moves conv1";
  EXPECT_LE((s.model()->trunk->conv1->weight.detach() - weight).abs().max().item<double>(), 1e-6);
  EXPECT_LE((s.bank().rows() - rows).abs().max().item<double>(), 1e-6);
}

TEST(TrainState, LrZeroKeepsTheWeightsAndMovesOnlyTheBatchsBankRows) {
  at::manual_seed(5);
  const at::Tensor images = at::randn({4, 3, 16, 16}), patches = at::randn({4, 9, 3, 8, 8});
  const at::Tensor indices = at::arange(4, at::kLong);
  auto s = pirl::testing::tinyTrainState(3, 40);
  const at::Tensor w0 = s.model()->trunk->conv1->weight.detach().clone();
  const at::Tensor rows0 = s.bank().rows().clone();
  s.step(images, patches, indices, 0.0);
  EXPECT_TRUE(at::equal(w0, s.model()->trunk->conv1->weight.detach())) << "lr 0 keeps the weights";
  EXPECT_FALSE(at::equal(rows0.narrow(0, 0, 4), s.bank().rows().narrow(0, 0, 4))) << "the batch's rows move";
  EXPECT_TRUE(at::equal(rows0.narrow(0, 4, 36), s.bank().rows().narrow(0, 4, 36))) << "the others do not";
}

// The step reads an EMA of Z's batch estimates with its losses and updates Z after: the Z of the loss alone
// with each step's estimates applied, step by step (lr 0: the same f and g for both).
TEST(TrainState, AnEmaOfZFollowsTheValuesOfTheLossAlone) {
  train::TrainState base = pirl::testing::tinyTrainState(4, 40);
  PirlLossOptions o = base.loss().options();
  o.zMode = ZMode::Ema;
  o.zMomentum = 0.5;
  train::TrainState s(base.model(), std::make_shared<MemoryBank>(base.bank().rows().clone(), base.bank().generatorState()), o,
                      {pirl::testing::paperSgd(), train::Precision::Fp32, 7});
  MemoryBank twin(base.bank().rows().clone(), base.bank().generatorState());
  PirlLoss alone(o);
  at::manual_seed(6);
  for (int64_t step = 0; step < 4; ++step) {
    const at::Tensor images = at::randn({4, 3, 16, 16}), patches = at::randn({4, 9, 3, 8, 8});
    const at::Tensor indices = at::randperm(40, at::kLong).narrow(0, 0, 4);
    {
      const c10::NoGradGuard noGrad;
      s.model()->train();
      const model::Embeddings e = s.model()->forward(images, patches);
      const PirlLossResult r = alone(twin, e.f, e.g, indices, IndexCheck::Check, true,
                                     {splitmix64(splitmix64(7) ^ static_cast<uint64_t>(step)), indices});
      if (r.zEstimates.defined()) alone.updateZ(r.zEstimates[0].item<double>(), r.zEstimates[1].item<double>());
    }
    s.step(images, patches, indices, 0.0);
    EXPECT_NEAR(s.loss().zJigsaw(), alone.zJigsaw(), 1e-9 * alone.zJigsaw()) << step;
    EXPECT_NEAR(s.loss().zImage(), alone.zImage(), 1e-9 * alone.zImage()) << step;
  }
  EXPECT_NE(s.loss().zImage(), s.loss().zJigsaw());
}

// A NaN pixel makes the loss NaN; values of 1e20 leave loss and gradients finite (BatchNorm normalises them) but
// overflow the running variance, which would make every later evaluation NaN. Either step is refused, saying which.
TEST(TrainState, ANonFiniteLossOrOverflowingStatisticsChangeNothing) {
  const std::vector<std::pair<std::function<at::Tensor(at::Tensor)>, std::string>> spoilers{
      {[](at::Tensor images) {
         images[0][0][0][0] = std::numeric_limits<float>::quiet_NaN();
         return images;
       },
       "non-finite loss"},
      {[](const at::Tensor& images) { return images * 1e20; },
       "BatchNorm's running statistics overflowed float32 in this step's forward, though its loss"}};
  for (const auto& [spoil, message] : spoilers) {
    auto s = pirl::testing::tinyTrainState(2, 40);
    const at::Tensor indices = at::arange(4, at::kLong);
    s.step(at::randn({4, 3, 16, 16}), at::randn({4, 9, 3, 8, 8}), indices, 0.1);
    const at::Tensor weight = s.model()->trunk->conv1->weight.detach().clone();
    const at::Tensor rows = s.bank().rows().clone();
    std::vector<std::pair<std::string, at::Tensor>> buffers;
    for (const auto& b : s.model()->named_buffers()) buffers.emplace_back(b.key(), b.value().clone());
    try {
      s.step(spoil(at::randn({4, 3, 16, 16})), at::randn({4, 9, 3, 8, 8}), indices, 0.1);
      ADD_FAILURE() << "taken: " << message;
    } catch (const c10::Error& e) {
      EXPECT_EQ(std::string(e.what_without_backtrace()).rfind(message, 0), 0u) << e.what_without_backtrace();
    }
    EXPECT_TRUE(at::equal(weight, s.model()->trunk->conv1->weight.detach())) << message;
    EXPECT_TRUE(at::equal(rows, s.bank().rows())) << message;
    // BatchNorm's running statistics and step counts too.
    int64_t counts = 0;
    for (const auto& [name, before] : buffers) {
      EXPECT_TRUE(at::equal(before, s.model()->named_buffers()[name])) << name << ", " << message;
      counts += before.is_floating_point() ? 0 : 1;
    }
    EXPECT_GT(counts, 10);
    EXPECT_EQ(buffers.size(), 3 * counts);
  }
}

// A first step not taken leaves Z unestimated: the next step estimates it from its own batch (a NaN batch's
// estimate had become the run's Z, every later loss NaN).
TEST(TrainState, AFirstStepNotTakenLeavesZUnestimated) {
  auto failed = pirl::testing::tinyTrainState(2, 40);
  const at::Tensor indices = at::arange(4, at::kLong);
  at::Tensor spoilt = at::randn({4, 3, 16, 16});
  spoilt[0][0][0][0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(failed.step(spoilt, at::randn({4, 9, 3, 8, 8}), indices, 0.1), c10::Error);
  EXPECT_LE(failed.loss().zImage(), 0);
  EXPECT_LE(failed.loss().zJigsaw(), 0);
  const train::StepResult next = failed.step(at::randn({4, 3, 16, 16}), at::randn({4, 9, 3, 8, 8}), indices, 0.1);
  EXPECT_TRUE(std::isfinite(next.loss));
  EXPECT_TRUE(std::isfinite(failed.loss().zImage()) && failed.loss().zImage() > 0);
  EXPECT_TRUE(std::isfinite(failed.loss().zJigsaw()) && failed.loss().zJigsaw() > 0);
}

// A step that throws inside its gradients (out of memory, a collective's timeout; here a gradient hook) is not taken
// either: NCE's first estimate of Z, made by the forward, goes back with BatchNorm's statistics and counts.
TEST(TrainState, AStepThatThrowsLeavesZAndBuffersAsTheyWere) {
  auto s = pirl::testing::tinyTrainState(2, 40);
  std::vector<std::pair<std::string, at::Tensor>> buffers;
  for (const auto& b : s.model()->named_buffers()) buffers.emplace_back(b.key(), b.value().clone());
  at::Tensor& weight = s.model()->trunk->conv1->weight;
  const unsigned hook = weight.register_hook([](const at::Tensor&) -> at::Tensor { throw std::runtime_error("out of memory (injected)"); });
  const at::Tensor indices = at::arange(4, at::kLong);
  EXPECT_THROW(s.step(at::randn({4, 3, 16, 16}), at::randn({4, 9, 3, 8, 8}), indices, 0.1), std::runtime_error);
  EXPECT_EQ(s.steps(), 0);  // not counted: the next call draws its negatives again
  EXPECT_LE(s.loss().zImage(), 0);
  EXPECT_LE(s.loss().zJigsaw(), 0);
  for (const auto& [name, before] : buffers) EXPECT_TRUE(at::equal(before, s.model()->named_buffers()[name])) << name;
  weight.remove_hook(hook);
  EXPECT_TRUE(std::isfinite(s.step(at::randn({4, 3, 16, 16}), at::randn({4, 9, 3, 8, 8}), indices, 0.1).loss));
  EXPECT_GT(s.loss().zImage(), 0);
  EXPECT_EQ(s.steps(), 1);
}

// A failed step says what caused it: weights already non-finite (naming the first such), a batch holding NaN (naming
// the sample) or values far outside normalised images, else the lr and the largest weight (past 10^4: diverged). The
// loss is made NaN by a bank row, which none of them is.
TEST(TrainState, AFailedStepDescribesItsCause) {
  const auto failure = [](const std::function<void(train::TrainState&, at::Tensor&)>& spoil) {
    auto s = pirl::testing::tinyTrainState(2, 40);
    at::Tensor images = at::randn({4, 3, 16, 16});
    {
      const c10::NoGradGuard noGrad;  // weights written in place
      s.bank().rows()[2][0] = std::numeric_limits<float>::quiet_NaN();
      spoil(s, images);
    }
    try {
      s.step(images, at::randn({4, 9, 3, 8, 8}), at::arange(4, at::kLong), 0.25);
    } catch (const c10::Error& e) {
      return std::string(e.what_without_backtrace());
    }
    return std::string("no error");
  };
  const std::string sound = failure([](train::TrainState&, at::Tensor&) {});
  EXPECT_NE(sound.find("non-finite loss (loss NaN"), std::string::npos) << sound;
  EXPECT_NE(sound.find("This step's lr: 0.25; the largest weight: "), std::string::npos) << sound;
  EXPECT_EQ(sound.find("diverged"), std::string::npos) << sound;
  const std::string diverged = failure([](train::TrainState& s, at::Tensor&) { s.model()->fHead->fc->weight[0][0] = 3e5; });
  EXPECT_NE(diverged.find("the largest weight: 300000 (fHead.fc.weight): the updates diverged; lower the lr"), std::string::npos) << diverged;
  const std::string broken = failure([](train::TrainState& s, at::Tensor&) { s.model()->gHead->fc->bias[1] = std::numeric_limits<float>::infinity(); });
  EXPECT_NE(broken.find("The weights were already non-finite (gHead.fc.bias first): the step before overflowed them; lower the lr "
                        "(this step's: 0.25)"),
            std::string::npos)
      << broken;
  const std::string nanImage = failure([](train::TrainState&, at::Tensor& images) { images[2][1][5][5] = std::numeric_limits<float>::quiet_NaN(); });
  EXPECT_NE(nanImage.find(". The batch's images hold NaN or infinity (sample 2 first): the data is broken, not the run"), std::string::npos) << nanImage;
  const std::string huge = failure([](train::TrainState&, at::Tensor& images) { images[1][0][0][0] = 1e30; });
  EXPECT_NE(huge.find(". The batch's values reach 1e+30: the model takes normalised images"), std::string::npos) << huge;
}

// CUDA graphs hold what they captured: a CPU model has none, and an EMA of Z under NCE would change the
// captured step every step. (Their steps are compared with eager ones in train_cuda_test.cpp.)
TEST(TrainState, CudaGraphsNeedACudaModelAndAZThatStaysPut) {
  const auto make = [](nce::Mode mode, ZMode zMode) {
    model::PirlModelOptions o = pirl::testing::modelOptions(model::Arch::ResNet18, model::Stem::Small, 0.25);
    o.embeddingDim = 16;
    PirlLossOptions loss = pirl::testing::paperLoss();
    loss.mode = mode;
    loss.zMode = zMode;
    train::TrainState(model::PirlModel(o), std::make_shared<MemoryBank>(40, 16, 1), loss,
                      {pirl::testing::paperSgd(), train::Precision::Fp32, 1, /*cudaGraphs=*/true});
  };
  const auto message = [&](nce::Mode mode, ZMode zMode) {
    try {
      make(mode, zMode);
    } catch (const c10::ValueError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(nce::Mode::Nce, ZMode::Frozen).find("cudaGraphs needs a model on a CUDA device, got cpu"), std::string::npos);
  EXPECT_NE(message(nce::Mode::InfoNce, ZMode::Ema).find("cudaGraphs needs a model on a CUDA device"), std::string::npos);
  EXPECT_NE(message(nce::Mode::Nce, ZMode::Ema).find("cudaGraphs needs a Z that stays put"), std::string::npos);
}
TEST(Knn, WeightedVoteOfTheNearest) {
  // Two tight clusters on the unit circle, one label each; test points near each.
  const at::Tensor train = at::tensor({1.0f, 0.0f, 0.99f, 0.1f, 0.0f, 1.0f, 0.1f, 0.99f}).view({4, 2});
  const at::Tensor labels = at::tensor({0, 0, 1, 1}, at::kLong);
  const at::Tensor test = at::tensor({0.9f, 0.2f, 0.2f, 0.9f}).view({2, 2});
  const at::Tensor p = eval::knnPredict(train, labels, test, 3, 0.07, 2, 1);
  EXPECT_EQ(p[0].item<int64_t>(), 0);
  EXPECT_EQ(p[1].item<int64_t>(), 1);
  // k larger than N is clamped; weights decide against a 2-vs-1 majority of far points
  const at::Tensor t2 = at::tensor({1.0f, 0.0f, -1.0f, 0.05f, -1.0f, -0.05f}).view({3, 2});
  const at::Tensor l2 = at::tensor({0, 1, 1}, at::kLong);
  EXPECT_EQ(eval::knnPredict(t2, l2, at::tensor({0.95f, 0.3f}).view({1, 2}), 200, 0.07, 2)[0].item<int64_t>(), 0);
  EXPECT_THROW(eval::knnPredict(t2, at::tensor({0, 1, 2}, at::kLong), t2, 2, 0.07, 2), c10::IndexError);
}

TEST(Knn, NearestNeighboursMatchASortOfAllCosineSimilarities) {
  at::manual_seed(2);
  const at::Tensor features = at::randn({50, 6}, at::kDouble) * at::rand({50, 1}, at::kDouble);  // rows of varied length
  const at::Tensor queries = at::randn({7, 6}, at::kDouble);
  const eval::Neighbours nn = eval::nearestNeighbours(features, queries, 5, /*chunk=*/3);
  ASSERT_EQ(nn.index.sizes(), (std::vector<int64_t>{7, 5}));
  for (int64_t q = 0; q < 7; q++) {
    std::vector<std::pair<double, int64_t>> all;  // naive: every similarity, sorted
    for (int64_t i = 0; i < 50; i++) {
      const double s = (features[i] * queries[q]).sum().item<double>() /
                       (features[i].norm().item<double>() * queries[q].norm().item<double>());
      all.emplace_back(-s, i);
    }
    std::sort(all.begin(), all.end());
    for (int64_t j = 0; j < 5; j++) {
      EXPECT_EQ(nn.index[q][j].item<int64_t>(), all[j].second);
      EXPECT_NEAR(nn.similarity[q][j].item<float>(), -all[j].first, 1e-5);
    }
  }
  EXPECT_EQ(eval::nearestNeighbours(features, queries, 500).index.size(1), 50) << "k is clamped to N";
  // A row found as its own neighbour has similarity 1 at most, whatever the rounding of 300 rows of 128.
  const at::Tensor rows = at::randn({300, 128});
  const at::Tensor self = eval::nearestNeighbours(rows, rows, 1).similarity;
  EXPECT_LE(self.max().item<float>(), 1.0f);
  EXPECT_GT(self.min().item<float>(), 1.0f - 1e-5f);
  EXPECT_THROW(eval::nearestNeighbours(features, at::randn({2, 5}), 1), c10::ValueError);
  EXPECT_THROW(eval::nearestNeighbours(features, queries, 0), c10::ValueError);
  // A NaN row would rank first for every query (topk sorts NaN highest): refused, naming the row.
  at::Tensor broken = features.clone();
  broken[17][2] = std::numeric_limits<double>::quiet_NaN();
  try {
    eval::nearestNeighbours(broken, queries, 5);
    ADD_FAILURE() << "a NaN row was ranked";
  } catch (const c10::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("features must be finite: row 17 holds NaN or infinity (1 row(s) of 50)"), std::string::npos) << e.what();
  }
  at::Tensor infinite = queries.clone();
  infinite[3][0] = std::numeric_limits<double>::infinity();
  EXPECT_THROW(eval::nearestNeighbours(features, infinite, 5), c10::ValueError);
}

// lib/config.ts's defaults for the probe: 30 epochs, batch 256, lr 0.1, weight decay 1e-4, seed 0.
const eval::LinearProbeOptions kProbe{30, 256, 0.1, 1e-4, 0};

TEST(LinearProbe, SeparatesLinearlySeparableClassesAndNotNoise) {
  at::manual_seed(4);
  // Three Gaussian blobs far apart in 8-D: a linear classifier gets (nearly) all of them.
  const at::Tensor centres = at::randn({3, 8}) * 6;
  const at::Tensor labels = at::randint(3, {600}, at::kLong);
  const at::Tensor features = centres.index_select(0, labels) + at::randn({600, 8});
  const double separable = eval::linearProbeAccuracy(features.narrow(0, 0, 500), labels.narrow(0, 0, 500),
                                                     features.narrow(0, 500, 100), labels.narrow(0, 500, 100), 3, kProbe);
  EXPECT_GT(separable, 0.97);
  // Labels unrelated to the features: chance level.
  const at::Tensor noise = at::randint(3, {600}, at::kLong);
  const double chance = eval::linearProbeAccuracy(features.narrow(0, 0, 500), noise.narrow(0, 0, 500),
                                                  features.narrow(0, 500, 100), noise.narrow(0, 500, 100), 3, kProbe);
  EXPECT_LT(chance, 0.55);
  // The trained layer labels new rows as its logits say; bad shapes and labels are refused.
  const eval::LinearClassifier probe = eval::trainLinearProbe(features.narrow(0, 0, 500), labels.narrow(0, 0, 500), 3, kProbe);
  const at::Tensor held = features.narrow(0, 500, 100);
  EXPECT_TRUE(at::equal(eval::predictLinear(probe, held), ((held - probe.mean) / probe.std).matmul(probe.weight).add(probe.bias).argmax(1)));
  EXPECT_THROW(eval::predictLinear(probe, at::randn({2, 7})), c10::ValueError);
  const eval::LinearClassifier single = eval::trainLinearProbe(features.narrow(0, 0, 1), labels.narrow(0, 0, 1), 3, kProbe);
  EXPECT_TRUE(at::isfinite(single.weight).all().item<bool>() && at::isfinite(single.std).all().item<bool>()) << "one row: no NaN spread";
  EXPECT_EQ(eval::predictLinear(single, features.narrow(0, 0, 1)).item<int64_t>(), labels[0].item<int64_t>());
  EXPECT_THROW(eval::trainLinearProbe(features.narrow(0, 0, 10), labels.narrow(0, 0, 10) + 3, 3, kProbe), c10::ValueError);
}

TEST(EvalStop, ARequestedStopEndsTheKnnAndTheProbeBetweenPiecesAnUnrequestedOneChangesNothing) {
  at::manual_seed(5);
  const at::Tensor features = at::randn({40, 4}), queries = at::randn({9, 4});
  const at::Tensor labels = at::randint(2, {40}, at::kLong);
  StopFlag idle, requested;
  requested.request();
  const eval::Neighbours plain = eval::nearestNeighbours(features, queries, 3, /*chunk=*/2);
  EXPECT_TRUE(at::equal(eval::nearestNeighbours(features, queries, 3, 2, &idle).index, plain.index));
  EXPECT_TRUE(at::equal(eval::knnPredict(features, labels, queries, 3, 0.07, 2, 2, &idle), eval::knnPredict(features, labels, queries, 3, 0.07, 2)));
  const auto stops = [](const std::function<void()>& work, const std::string& what) {
    try {
      work();
      ADD_FAILURE() << what << " ran to its end";
    } catch (const std::runtime_error& e) {
      EXPECT_EQ(std::string(e.what()), what + " was stopped: its signal was aborted");
    }
  };
  stops([&] { eval::nearestNeighbours(features, queries, 3, 2, &requested); }, "the kNN search");
  stops([&] { eval::knnPredict(features, labels, queries, 3, 0.07, 2, 2, &requested); }, "the kNN search");
  eval::LinearProbeOptions probe = kProbe;
  const eval::LinearClassifier free = eval::trainLinearProbe(features, labels, 2, probe);
  probe.stop = &idle;
  EXPECT_TRUE(at::equal(eval::trainLinearProbe(features, labels, 2, probe).weight, free.weight));
  probe.stop = &requested;
  stops([&] { eval::trainLinearProbe(features, labels, 2, probe); }, "the linear probe's training");
}

TEST(EvalCuda, KnnAndTheLinearProbeTakeCudaInputsAndAnswerAsOnTheCpu) {
  PIRL_REQUIRE(at::hasCUDA(), "no CUDA device");
  at::manual_seed(6);
  const at::Tensor centres = at::randn({3, 8}) * 6;
  const at::Tensor labels = at::randint(3, {300}, at::kLong);
  const at::Tensor features = centres.index_select(0, labels) + at::randn({300, 8});
  const at::Tensor train = features.narrow(0, 0, 250), test = features.narrow(0, 250, 50);
  const at::Tensor trainLabels = labels.narrow(0, 0, 250), testLabels = labels.narrow(0, 250, 50);
  EXPECT_TRUE(at::equal(eval::knnPredict(train.cuda(), trainLabels.cuda(), test.cuda(), 5, 0.07, 3),
                        eval::knnPredict(train, trainLabels, test, 5, 0.07, 3)));
  EXPECT_EQ(eval::linearProbeAccuracy(train.cuda(), trainLabels.cuda(), test.cuda(), testLabels.cuda(), 3, kProbe),
            eval::linearProbeAccuracy(train, trainLabels, test, testLabels, 3, kProbe));
}

}  // namespace

namespace {

TEST(LossScaler, FollowsGradScalersRule) {
  pirl::train::LossScaler scaler(1024, 3);
  EXPECT_FALSE(scaler.update(false));  // overflow: skip and halve
  EXPECT_EQ(scaler.scale(), 512);
  EXPECT_TRUE(scaler.update(true));
  EXPECT_TRUE(scaler.update(true));
  EXPECT_EQ(scaler.scale(), 512);
  EXPECT_TRUE(scaler.update(true));  // the third finite step in a row doubles it
  EXPECT_EQ(scaler.scale(), 1024);
  EXPECT_EQ(scaler.goodSteps(), 0);
  scaler.restore(8, 2);
  EXPECT_TRUE(scaler.update(true));
  EXPECT_EQ(scaler.scale(), 16);
  EXPECT_THROW(scaler.restore(0, 0), c10::ValueError);
}

TEST(AutocastScope, CastsInsideAndRestoresTheStateAfter) {
  const at::Tensor a = at::randn({4, 4}), b = at::randn({4, 4});
  {
    pirl::train::AutocastScope scope(c10::kCPU, pirl::train::Precision::Bf16);
    EXPECT_EQ(at::mm(a, b).scalar_type(), at::kBFloat16);
    {
      pirl::train::AutocastScope inner(c10::kCPU, pirl::train::Precision::Fp32);  // fp32 changes nothing
      EXPECT_EQ(at::mm(a, b).scalar_type(), at::kBFloat16);
    }
  }
  EXPECT_EQ(at::mm(a, b).scalar_type(), at::kFloat);
  EXPECT_THROW(pirl::train::AutocastScope(c10::kCPU, pirl::train::Precision::Fp16), c10::ValueError);
  EXPECT_EQ(at::mm(a, b).scalar_type(), at::kFloat);
}

TEST(Sgd, MultiTensorStepEqualsThePerParameterRule) {
  // Three parameters, decayed or not, over three steps: the _foreach step against the loop written out.
  at::manual_seed(8);
  std::vector<at::Tensor> params = {at::randn({3, 2}), at::randn({4}), at::randn({2, 2, 2})};
  std::vector<at::Tensor> expected, buffers(3);
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (size_t i = 0; i < params.size(); ++i) {
    expected.push_back(params[i].clone());
    named.emplace_back("p" + std::to_string(i), params[i].requires_grad_(true));
  }
  const std::vector<bool> decay = {true, false, true};
  pirl::train::Sgd sgd(named, decay, {0.9, 0.01});
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < params.size(); ++i) {
      const at::Tensor g = at::randn(params[i].sizes());
      params[i].mutable_grad() = g.clone();
      const at::Tensor d = decay[i] ? g + 0.01 * expected[i] : g;
      buffers[i] = step == 0 ? d.clone() : buffers[i] * 0.9 + d;
      expected[i] = expected[i] - 0.1 * buffers[i];
    }
    EXPECT_NEAR(sgd.gradSquaredNorm().item<double>(),
                [&] { double s = 0; for (auto& p : params) s += p.grad().pow(2).sum().item<double>(); return s; }(), 1e-4);
    sgd.step(0.1);
    for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(at::allclose(params[i].detach(), expected[i], 1e-6, 1e-6)) << i;
  }
  sgd.zeroGrad();
  EXPECT_EQ(sgd.gradSquaredNorm().item<double>(), 0);
}

}  // namespace
