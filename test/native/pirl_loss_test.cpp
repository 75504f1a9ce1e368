#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "core/pirl_loss.h"
#include "presets.h"

namespace {

at::Tensor unit(int64_t b, int64_t d) {
  const at::Tensor r = at::randn({b, d});
  return r / r.norm(2, 1, true);
}

TEST(PirlLoss, IsLambdaMixOfTwoNceTermsAgainstThePreUpdateBankThenUpdates) {
  for (const bool shared : {false, true}) {
    at::manual_seed(0);
    pirl::PirlLossOptions o = pirl::testing::paperLoss();
    o.numNegatives = 64;
    o.sharedNegatives = shared;
    o.lambda = 0.3;
    pirl::MemoryBank bank(200, 16, 5), twin(200, 16, 5);
    const at::Tensor f = unit(8, 16).requires_grad_(true), g = unit(8, 16).requires_grad_(true);
    const at::Tensor idx = at::randint(200, {8}, at::kLong);
    pirl::PirlLoss loss(o);
    const auto r = loss(bank, f, g, idx, pirl::IndexCheck::Check, true);

    // The same draws from the twin: jigsaw term first, then the image term.
    const at::Tensor before = twin.rows().clone();
    const at::Tensor negG = shared ? twin.sampleShared(64) : twin.sampleNegatives(8, 64);
    const at::Tensor negF = shared ? twin.sampleShared(64) : twin.sampleNegatives(8, 64);
    const auto refG = pirl::nce::nceLossReference(g, before, idx, negG, {0.07, pirl::nce::Mode::Nce, -1});
    const auto refF = pirl::nce::nceLossReference(f, before, idx, negF, {0.07, pirl::nce::Mode::Nce, -1});
    const double expected = 0.3 * refG.loss.item<double>() + 0.7 * refF.loss.item<double>();
    EXPECT_NEAR(r.loss.item<double>(), expected, 1e-5 * std::abs(expected)) << "shared=" << shared;
    EXPECT_NEAR(r.zJigsaw, refG.zBatch.item<double>(), 1e-5 * refG.zBatch.item<double>());
    EXPECT_NEAR(r.zImage, refF.zBatch.item<double>(), 1e-5 * refF.zBatch.item<double>());

    twin.update(idx, f.detach(), 0.5, pirl::IndexCheck::Check);
    EXPECT_TRUE(at::allclose(bank.rows(), twin.rows(), 1e-6, 1e-6));

    r.loss.backward();
    EXPECT_TRUE(f.grad().defined() && g.grad().defined());
  }
}

TEST(PirlLoss, ZIsFrozenAfterTheFirstStepOrFollowsAnEma) {
  at::manual_seed(1);
  pirl::MemoryBank bank(100, 8, 2);
  pirl::PirlLossOptions frozenOptions = pirl::testing::paperLoss();
  frozenOptions.numNegatives = 16;
  pirl::PirlLoss frozen(frozenOptions);
  const at::Tensor idx = at::randint(100, {4}, at::kLong);
  const auto first = frozen(bank, unit(4, 8), unit(4, 8), idx, pirl::IndexCheck::Check, true);
  const auto second = frozen(bank, unit(4, 8), unit(4, 8), idx, pirl::IndexCheck::Check, true);
  EXPECT_GT(first.zImage, 0);
  EXPECT_EQ(first.zImage, second.zImage);
  EXPECT_EQ(first.zJigsaw, second.zJigsaw);

  pirl::PirlLossOptions emaOptions = frozenOptions;
  emaOptions.zMode = pirl::ZMode::Ema;
  emaOptions.zMomentum = 0.5;
  pirl::PirlLoss ema(emaOptions);
  const auto a = ema(bank, unit(4, 8), unit(4, 8), idx, pirl::IndexCheck::Check, true);
  const auto b = ema(bank, unit(4, 8), unit(4, 8), idx, pirl::IndexCheck::Check, true);
  EXPECT_NE(a.zImage, b.zImage);
}

// Left to the caller, the EMA of Z is the same: the batch's estimates come back with the result (the
// first step still estimates Z itself), and updateZ applies them as the loss would have.
TEST(PirlLoss, AnEmaOfZLeftToTheCallerFollowsTheSameValues) {
  pirl::PirlLossOptions o = pirl::testing::paperLoss();
  o.numNegatives = 16;
  o.zMode = pirl::ZMode::Ema;
  o.zMomentum = 0.7;
  pirl::PirlLoss itself(o), caller(o);
  caller.leaveZUpdatesToCaller();
  pirl::MemoryBank bank(100, 8, 2), twin(100, 8, 2);
  at::manual_seed(4);
  for (int step = 0; step < 4; ++step) {
    const at::Tensor f = unit(4, 8), g = unit(4, 8), idx = at::randint(100, {4}, at::kLong);
    const pirl::NegativeStreams streams{static_cast<uint64_t>(step), idx};
    const auto a = itself(bank, f, g, idx, pirl::IndexCheck::Check, true, streams);
    const auto b = caller(twin, f, g, idx, pirl::IndexCheck::Check, true, streams);
    EXPECT_EQ(a.loss.item<double>(), b.loss.item<double>()) << step;
    ASSERT_EQ(b.zEstimates.defined(), step > 0) << step;
    EXPECT_FALSE(a.zEstimates.defined());
    if (step > 0) {
      EXPECT_EQ(b.zEstimates.sizes(), (at::IntArrayRef{2}));
      caller.updateZ(b.zEstimates[0].item<double>(), b.zEstimates[1].item<double>());
    }
    EXPECT_DOUBLE_EQ(caller.zJigsaw(), itself.zJigsaw()) << step;
    EXPECT_DOUBLE_EQ(caller.zImage(), itself.zImage()) << step;
  }
  EXPECT_THROW(caller.updateZ(std::nan(""), 1.0), c10::ValueError);
}

TEST(PirlLoss, RejectsBadOptionsAndShapes) {
  pirl::PirlLossOptions o = pirl::testing::paperLoss();
  o.lambda = 1.5;
  EXPECT_THROW(pirl::PirlLoss{o}, c10::ValueError);
  pirl::MemoryBank bank(10, 8, 1);
  pirl::PirlLoss loss(pirl::testing::paperLoss());
  EXPECT_THROW(loss(bank, unit(4, 8), unit(3, 8), at::zeros({4}, at::kLong), pirl::IndexCheck::Check, true), c10::ValueError);
  EXPECT_THROW(loss(bank, unit(4, 6), unit(4, 6), at::zeros({4}, at::kLong), pirl::IndexCheck::Check, true), c10::ValueError);
}

}  // namespace
