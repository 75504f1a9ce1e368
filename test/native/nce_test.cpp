// The fused NCE op against the naive gather+bmm reference, and against float64 finite differences.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <limits>
#include <tuple>

#include "core/nce/nce.h"

namespace {

using pirl::nce::Mode;
using pirl::nce::Options;

at::Tensor unitRows(int64_t n, int64_t d, at::ScalarType type) {
  const at::Tensor r = at::randn({n, d}, at::TensorOptions().dtype(type));
  return r / r.norm(2, 1, true);
}

struct Case {
  at::Tensor x, bank, positives, negatives;
};

// Embeddings near their positives, so the scores cover a realistic range, not only ~0.
Case makeCase(int64_t B, int64_t K, int64_t D, int64_t N, bool shared, at::ScalarType type, uint64_t seed) {
  at::manual_seed(seed);
  Case c;
  c.bank = unitRows(N, D, type);
  c.positives = at::randint(N, {B}, at::kLong);
  c.x = (c.bank.index_select(0, c.positives) + 0.5 * at::randn({B, D}, at::TensorOptions().dtype(type)));
  c.x = (c.x / c.x.norm(2, 1, true)).detach().requires_grad_(true);
  c.negatives = shared ? at::randint(N, {K}, at::kLong) : at::randint(N, {B, K}, at::kLong);
  return c;
}

// The reference runs in float64: its literal log(1 − h) cancels catastrophically in float32 when
// h → 1 (similar rows at τ = 0.07), which the fused op avoids with softplus.
std::pair<at::Tensor, at::Tensor> lossAndGrad(const Case& c, const Options& o, bool reference) {
  if (reference) {
    at::Tensor x = c.x.detach().to(at::kDouble).requires_grad_(true);
    auto r = pirl::nce::nceLossReference(x, c.bank.to(at::kDouble), c.positives, c.negatives, o);
    r.loss.backward();
    return {r.loss.detach(), x.grad().to(c.x.scalar_type())};
  }
  at::Tensor x = c.x.detach().clone().requires_grad_(true);
  auto r = pirl::nce::nceLoss(x, c.bank, c.positives, c.negatives, o, pirl::IndexCheck::Check);
  r.loss.backward();
  return {r.loss.detach(), x.grad()};
}

class NceGrid : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t, double, Mode, bool>> {};

TEST_P(NceGrid, MatchesTheGatherBmmReference) {
  const auto [B, K, D, tau, mode, shared] = GetParam();
  const Case c = makeCase(B, K, D, 97, shared, at::kFloat, 1234 + B * 7 + K);
  for (const double z : {-1.0, 2500.0}) {
    const Options o{tau, mode, z};
    auto fused = pirl::nce::nceLoss(c.x, c.bank, c.positives, c.negatives, o, pirl::IndexCheck::Check);
    auto ref = pirl::nce::nceLossReference(c.x, c.bank, c.positives, c.negatives, o);
    EXPECT_NEAR(fused.zBatch.item<double>(), ref.zBatch.item<double>(), 1e-5 * ref.zBatch.item<double>());
    EXPECT_NEAR(fused.zUsed.item<double>(), ref.zUsed.item<double>(), 1e-5 * ref.zUsed.item<double>());
    const auto [lf, gf] = lossAndGrad(c, o, false);
    const auto [lr, gr] = lossAndGrad(c, o, true);
    EXPECT_NEAR(lf.item<double>(), lr.item<double>(), 1e-5 * std::abs(lr.item<double>()) + 1e-6)
        << "B=" << B << " K=" << K << " D=" << D << " tau=" << tau << " z=" << z;
    // Relative 1e-5, with a floor at float32's rounding of a unit coefficient scaled by 1/τ (saturated rows).
    const double scale = gr.abs().max().item<double>();
    const double floor = std::numeric_limits<float>::epsilon() / tau;
    EXPECT_LE((gf - gr).abs().max().item<double>(), 1e-5 * scale + floor)
        << "B=" << B << " K=" << K << " D=" << D << " tau=" << tau << " z=" << z;
  }
}

INSTANTIATE_TEST_SUITE_P(Grid, NceGrid,
                         ::testing::Combine(::testing::Values(1, 5, 16), ::testing::Values(1, 7, 64),
                                            ::testing::Values(3, 16, 128), ::testing::Values(0.07, 0.5),
                                            ::testing::Values(Mode::Nce, Mode::InfoNce), ::testing::Bool()));

class NceGradcheck : public ::testing::TestWithParam<std::tuple<Mode, bool>> {};

TEST_P(NceGradcheck, AgreesWithFloat64FiniteDifferences) {
  const auto [mode, shared] = GetParam();
  const Case c = makeCase(4, 9, 6, 31, shared, at::kDouble, 77);
  // Z fixed: the op treats Z as a constant, as NPID/VISSL do.
  const Options o{0.2, mode, 40.0};
  const auto [loss, grad] = lossAndGrad(c, o, false);
  const double eps = 1e-6;
  at::Tensor x = c.x.detach().clone();
  auto* px = x.data_ptr<double>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double keep = px[i];
    px[i] = keep + eps;
    const double up = pirl::nce::nceLoss(x, c.bank, c.positives, c.negatives, o, pirl::IndexCheck::Check).loss.item<double>();
    px[i] = keep - eps;
    const double down = pirl::nce::nceLoss(x, c.bank, c.positives, c.negatives, o, pirl::IndexCheck::Check).loss.item<double>();
    px[i] = keep;
    const double numeric = (up - down) / (2 * eps);
    EXPECT_NEAR(grad.view(-1)[i].item<double>(), numeric, 1e-6 * (1 + std::abs(numeric))) << "element " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, NceGradcheck, ::testing::Combine(::testing::Values(Mode::Nce, Mode::InfoNce), ::testing::Bool()));

TEST(Nce, RepeatedAndPositiveIndicesAmongNegatives) {
  Case c = makeCase(6, 12, 16, 9, false, at::kFloat, 5);
  // The positive itself among the negatives, and one row repeated many times.
  c.negatives.select(1, 0).copy_(c.positives);
  c.negatives.narrow(1, 1, 6).fill_(3);
  for (Mode mode : {Mode::Nce, Mode::InfoNce}) {
    const Options o{0.07, mode, -1};
    const auto [lf, gf] = lossAndGrad(c, o, false);
    const auto [lr, gr] = lossAndGrad(c, o, true);
    EXPECT_NEAR(lf.item<double>(), lr.item<double>(), 1e-5 * std::abs(lr.item<double>()));
    EXPECT_LE((gf - gr).abs().max().item<double>(), 1e-5 * gr.abs().max().item<double>());
  }
}

TEST(Nce, BankGetsNoGradientAndComposesWithAutograd) {
  Case c = makeCase(3, 5, 8, 20, false, at::kFloat, 9);
  at::Tensor bank = c.bank.clone().requires_grad_(true);
  at::Tensor w = at::randn({8, 8}).requires_grad_(true);
  const at::Tensor y = at::matmul(c.x.detach(), w);  // the op inside a larger graph, on unit rows as it asks
  at::Tensor x = y / y.norm(2, 1, true);
  auto r = pirl::nce::nceLoss(x, bank, c.positives, c.negatives, {0.07, Mode::Nce, -1}, pirl::IndexCheck::Check);
  r.loss.backward();
  EXPECT_TRUE(w.grad().defined());
  EXPECT_GT(w.grad().abs().sum().item<double>(), 0);
  EXPECT_FALSE(bank.grad().defined());
}

TEST(Nce, BankMayBeUpdatedInPlaceBeforeBackward) {
  for (const bool sharedNegatives : {false, true}) {
    const Case c = makeCase(4, 6, 8, 30, sharedNegatives, at::kFloat, 11);
    const Options o{0.07, Mode::Nce, -1};
    const auto [loss, expected] = lossAndGrad(c, o, false);
    at::Tensor bank = c.bank.clone();
    at::Tensor x = c.x.detach().clone().requires_grad_(true);
    auto r = pirl::nce::nceLoss(x, bank, c.positives, c.negatives, o, pirl::IndexCheck::Check);
    bank.mul_(0.5).add_(0.25);  // what the memory-bank update does, before the step's backward
    r.loss.backward();
    EXPECT_TRUE(at::allclose(x.grad(), expected)) << "shared=" << sharedNegatives;
  }
}

TEST(Nce, FirstCallEstimatesZAndALaterCallUsesTheGivenOne) {
  const Case c = makeCase(8, 32, 16, 50, false, at::kFloat, 3);
  auto first = pirl::nce::nceLoss(c.x, c.bank, c.positives, c.negatives, {0.07, Mode::Nce, -1}, pirl::IndexCheck::Check);
  at::Tensor s = at::cat({(c.x * c.bank.index_select(0, c.positives)).sum(1, true),
                          at::bmm(c.bank.index_select(0, c.negatives.reshape(-1)).view({8, 32, 16}), c.x.unsqueeze(2)).squeeze(2)},
                         1);
  const double expected = 50 * (s / 0.07).exp().mean().item<double>();
  EXPECT_NEAR(first.zBatch.item<double>(), expected, 1e-5 * expected);
  EXPECT_DOUBLE_EQ(first.zUsed.item<double>(), first.zBatch.item<double>());
  auto later = pirl::nce::nceLoss(c.x, c.bank, c.positives, c.negatives, {0.07, Mode::Nce, 123.0}, pirl::IndexCheck::Check);
  EXPECT_DOUBLE_EQ(later.zUsed.item<double>(), 123.0);
}

TEST(Nce, BadArgumentsAreRefusedWithTheirNames) {
  const Case c = makeCase(2, 3, 4, 10, false, at::kFloat, 1);
  const Options o{0.07, Mode::Nce, -1};
  at::Tensor outOfRange = c.negatives.clone();
  outOfRange[1][2] = 10;
  EXPECT_THROW(pirl::nce::nceLoss(c.x, c.bank, c.positives, outOfRange, o, pirl::IndexCheck::Check), c10::IndexError);
  at::Tensor negative = c.positives.clone();
  negative[0] = -1;
  EXPECT_THROW(pirl::nce::nceLoss(c.x, c.bank, negative, c.negatives, o, pirl::IndexCheck::Check), c10::IndexError);
  EXPECT_THROW(pirl::nce::nceLoss(c.x, c.bank, c.positives.to(at::kInt), c.negatives, o, pirl::IndexCheck::Check), c10::TypeError);
  EXPECT_THROW(pirl::nce::nceLoss(c.x, c.bank.to(at::kDouble), c.positives, c.negatives, o, pirl::IndexCheck::Check), c10::TypeError);
  EXPECT_THROW(pirl::nce::nceLoss(c.x, c.bank.narrow(1, 0, 3), c.positives, c.negatives, o, pirl::IndexCheck::Check), c10::ValueError);
  EXPECT_THROW(pirl::nce::nceLoss(c.x, c.bank, c.positives, c.negatives, {0, Mode::Nce, -1}, pirl::IndexCheck::Check), c10::ValueError);
  // A caller's bank is read whole for unit rows (a row of norm 2 scored as a cosine of 2); a MemoryBank's is trusted.
  at::Tensor longRow = c.bank.clone();
  longRow[6].mul_(2);
  EXPECT_THROW(pirl::nce::nceLoss(c.x, longRow, c.positives, c.negatives, o, pirl::IndexCheck::Check), c10::ValueError);
  EXPECT_NO_THROW(pirl::nce::nceLoss(c.x, longRow, c.positives, c.negatives, o, pirl::IndexCheck::Check, pirl::nce::BankRows::Unit));
  try {
    pirl::nce::nceLoss(c.x, c.bank, c.positives, outOfRange, o, pirl::IndexCheck::Check);
  } catch (const c10::IndexError& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("negatives must be rows in [0, 10)"), std::string::npos)
        << e.what_without_backtrace();
  }
  // Both index sets are read in one go: each range found exactly (int64's extremes too), positives told first.
  at::Tensor extreme = c.negatives.clone();
  extreme[0][0] = std::numeric_limits<int64_t>::max();
  extreme[1][1] = -3;
  const auto message = [&](const at::Tensor& positives) {
    try {
      pirl::nce::nceLoss(c.x, c.bank, positives, extreme, o, pirl::IndexCheck::Check);
    } catch (const c10::IndexError& e) {
      return std::string(e.what_without_backtrace());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message(c.positives).rfind("negatives must be rows in [0, 10), got values in [-3, 9223372036854775807]", 0), 0u)
      << message(c.positives);
  EXPECT_EQ(message(negative).rfind("positives must be rows in [0, 10), got values in [-1, ", 0), 0u) << message(negative);
}

}  // namespace
