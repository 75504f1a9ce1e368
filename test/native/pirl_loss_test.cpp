#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>

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
    const at::Tensor before = twin.rows().to(at::kDouble);
    const at::Tensor negG = shared ? twin.sampleShared(64) : twin.sampleNegatives(8, 64);
    const at::Tensor negF = shared ? twin.sampleShared(64) : twin.sampleNegatives(8, 64);
    // float64 leaves of their own: the reference's gradients, each term's alone.
    const at::Tensor fRef = f.detach().to(at::kDouble).requires_grad_(true), gRef = g.detach().to(at::kDouble).requires_grad_(true);
    const auto refG = pirl::nce::nceLossReference(gRef, before, idx, negG, {0.07, pirl::nce::Mode::Nce, -1});
    const auto refF = pirl::nce::nceLossReference(fRef, before, idx, negF, {0.07, pirl::nce::Mode::Nce, -1});
    const double expected = 0.3 * refG.loss.item<double>() + 0.7 * refF.loss.item<double>();
    EXPECT_NEAR(r.loss.item<double>(), expected, 1e-5 * std::abs(expected)) << "shared=" << shared;
    EXPECT_NEAR(r.zJigsaw, refG.zBatch.item<double>(), 1e-5 * refG.zBatch.item<double>());
    EXPECT_NEAR(r.zImage, refF.zBatch.item<double>(), 1e-5 * refF.zBatch.item<double>());

    twin.update(idx, f.detach(), 0.5, pirl::IndexCheck::Check);
    EXPECT_TRUE(at::allclose(bank.rows(), twin.rows(), 1e-6, 1e-6));

    // After the update, as a step's backward comes: the gradients are still those against the bank before it.
    r.loss.backward();
    refG.loss.backward();
    refF.loss.backward();
    for (const auto& [name, got, expected] : {std::tuple{"f", f.grad(), 0.7 * fRef.grad()}, std::tuple{"g", g.grad(), 0.3 * gRef.grad()}}) {
      const double scale = expected.abs().max().item<double>();
      ASSERT_GT(scale, 1e-3) << name;
      EXPECT_LE((got.to(at::kDouble) - expected).abs().max().item<double>(), 1e-5 * scale + 1e-7) << name << " shared=" << shared;
    }
  }
}

TEST(PirlLoss, ZIsFrozenAfterTheFirstStep) {
  at::manual_seed(1);
  pirl::MemoryBank bank(100, 8, 2);
  pirl::PirlLossOptions o = pirl::testing::paperLoss();
  o.numNegatives = 16;
  pirl::PirlLoss frozen(o);
  const at::Tensor idx = at::randint(100, {4}, at::kLong);
  const auto first = frozen(bank, unit(4, 8), unit(4, 8), idx, pirl::IndexCheck::Check, true);
  const auto second = frozen(bank, unit(4, 8), unit(4, 8), idx, pirl::IndexCheck::Check, true);
  EXPECT_GT(first.zImage, 0);
  EXPECT_EQ(first.zImage, second.zImage);
  EXPECT_EQ(first.zJigsaw, second.zJigsaw);
  EXPECT_FALSE(second.zEstimates.defined());  // nothing for a caller to apply
}

// With an EMA of Z the first step estimates Z itself; each later one returns its batch's estimates (the naive
// op's zBatch on the same negatives, against the bank before the step) for the caller to read with its other
// numbers, and updateZ applies them: Z ← m·Z + (1 − m)·estimate.
TEST(PirlLoss, AnEmaOfZFollowsTheEstimatesTheCallerApplies) {
  pirl::PirlLossOptions o = pirl::testing::paperLoss();
  o.numNegatives = 16;
  o.zMode = pirl::ZMode::Ema;
  o.zMomentum = 0.7;
  pirl::PirlLoss loss(o);
  pirl::MemoryBank bank(100, 8, 2);
  at::manual_seed(4);
  for (int step = 0; step < 4; ++step) {
    const at::Tensor f = unit(4, 8), g = unit(4, 8), idx = at::randint(100, {4}, at::kLong);
    const pirl::PirlNegatives negatives = loss.drawNegatives(bank, idx, {static_cast<uint64_t>(step), idx});
    const at::Tensor before = bank.rows().clone();
    const double zJigsaw = loss.zJigsaw(), zImage = loss.zImage();
    const auto r = loss(bank, f, g, idx, negatives, true);
    ASSERT_EQ(r.zEstimates.defined(), step > 0) << step;
    if (step == 0) {
      EXPECT_GT(loss.zImage(), 0);
      continue;
    }
    const auto refG = pirl::nce::nceLossReference(g, before, idx, negatives.jigsaw, {o.tau, pirl::nce::Mode::Nce, zJigsaw});
    const auto refF = pirl::nce::nceLossReference(f, before, idx, negatives.image, {o.tau, pirl::nce::Mode::Nce, zImage});
    ASSERT_EQ(r.zEstimates.sizes(), (at::IntArrayRef{2}));
    const double jigsaw = r.zEstimates[0].item<double>(), image = r.zEstimates[1].item<double>();
    EXPECT_NEAR(jigsaw, refG.zBatch.item<double>(), 1e-5 * jigsaw) << step;
    EXPECT_NEAR(image, refF.zBatch.item<double>(), 1e-5 * image) << step;
    EXPECT_NEAR(r.loss.item<double>(), o.lambda * refG.loss.item<double>() + (1 - o.lambda) * refF.loss.item<double>(),
                1e-5 * std::abs(r.loss.item<double>())) << step;
    EXPECT_EQ(loss.zJigsaw(), zJigsaw) << "changed before the caller applied the estimates";
    loss.updateZ(jigsaw, image);
    EXPECT_DOUBLE_EQ(loss.zJigsaw(), 0.7 * zJigsaw + 0.3 * jigsaw) << step;
    EXPECT_DOUBLE_EQ(loss.zImage(), 0.7 * zImage + 0.3 * image) << step;
  }
  EXPECT_THROW(loss.updateZ(std::nan(""), 1.0), c10::ValueError);
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
