// The fused NCE op on CUDA against the CPU op and the gather+bmm reference; skipped without a GPU. Float32
// with D = 128, 256 or 512 runs the split kernels (K = 4099: several splits per sample), the rest the rowwise one.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>

#include "core/nce/nce.h"
#include "requires.h"

namespace {

using pirl::nce::Mode;

// N unit bank rows, B positives among them and B unit embeddings `noise` away from their rows (the caller seeds).
struct NearTheirRows {
  at::Tensor bank, positives, x;
};

NearTheirRows nearTheirRows(int64_t N, int64_t D, int64_t B, double noise, at::ScalarType type = at::kFloat) {
  const auto opts = at::TensorOptions().dtype(type);
  at::Tensor bank = at::randn({N, D}, opts);
  bank = bank / bank.norm(2, 1, true);
  const at::Tensor positives = at::randint(N, {B}, at::kLong);
  at::Tensor x = bank.index_select(0, positives) + noise * at::randn({B, D}, opts);
  return {bank, positives, x / x.norm(2, 1, true)};
}

class NceCuda : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t, Mode, bool, at::ScalarType>> {};

TEST_P(NceCuda, MatchesCpuAndReference) {
  PIRL_REQUIRE(at::hasCUDA(), "no CUDA device (or a CPU-only libtorch): CUDA comparisons skipped");
  const auto [B, K, D, mode, shared, type] = GetParam();
  at::manual_seed(B * 31 + K);
  const auto [bank, positives, x] = nearTheirRows(257, D, B, 0.5, type);
  const at::Tensor negatives = shared ? at::randint(257, {K}, at::kLong) : at::randint(257, {B, K}, at::kLong);
  // Relative plus absolute: a float32 loss near 0 (B=1, K=1) carries ~1e-7 of absolute rounding.
  const double tol = type == at::kDouble ? 1e-10 : 1e-5, atol = type == at::kDouble ? 1e-12 : 1e-6;
  for (const double z : {-1.0, 300.0}) {
    const pirl::nce::Options o{0.07, mode, z};
    at::Tensor xc = x.clone().requires_grad_(true);
    auto cpu = pirl::nce::nceLoss(xc, bank, positives, negatives, o, pirl::IndexCheck::Check);
    cpu.loss.backward();
    at::Tensor xg = x.cuda().requires_grad_(true);
    auto gpu = pirl::nce::nceLoss(xg, bank.cuda(), positives.cuda(), negatives.cuda(), o, pirl::IndexCheck::Check);
    gpu.loss.backward();
    EXPECT_NEAR(gpu.loss.item<double>(), cpu.loss.item<double>(), tol * std::abs(cpu.loss.item<double>()) + atol);
    at::Tensor xr = x.cuda().to(at::kDouble).requires_grad_(true);
    auto ref = pirl::nce::nceLossReference(xr, bank.cuda().to(at::kDouble), positives.cuda(), negatives.cuda(), o);
    ref.loss.backward();
    // Z sums e^{s/τ}: a score's rounding comes out multiplied by 1/τ ≈ 14, and the largest few terms carry the
    // sum. So as the gradient, against float64 the CUDA op must be as accurate as the CPU op (within 2×), or
    // within a floor: float32 scores of D = 512 round at ~1e-6 (seen on the H200: CUDA and CPU 1.5e-5 of Z apart);
    // float64 shared negatives, whose scores are cuBLAS's GEMM there and OpenBLAS's here, were 1e-10 of Z apart.
    const double zExact = pirl::nce::nceLossReference(x.to(at::kDouble), bank.to(at::kDouble), positives, negatives, o).zBatch.item<double>();
    const double zFloor = type == at::kDouble ? 1e-9 : 1e-4;
    const double zCpuError = std::abs(cpu.zBatch.item<double>() - zExact), zGpuError = std::abs(gpu.zBatch.item<double>() - zExact);
    EXPECT_LE(zGpuError, std::max(2 * zCpuError, zFloor * zExact)) << "the CPU op's error: " << zCpuError;
    EXPECT_NEAR(gpu.loss.item<double>(), ref.loss.item<double>(), 1e-5 * std::abs(ref.loss.item<double>()) + 1e-6);
    // The gradient sums K+1 rows with cancellation: in float32 its error grows with K, for the CPU op as
    // for the CUDA one. Measured against float64, the CUDA op must be as accurate as the CPU op (within 2×).
    const at::Tensor exact = xr.grad().cpu();
    const double scale = exact.abs().max().item<double>();
    const double cpuError = (xc.grad().to(at::kDouble) - exact).abs().max().item<double>();
    const double gpuError = (xg.grad().cpu().to(at::kDouble) - exact).abs().max().item<double>();
    EXPECT_LE(gpuError, std::max(2 * cpuError, tol * scale) + atol) << "the CPU op's error: " << cpuError;
  }
}

INSTANTIATE_TEST_SUITE_P(Grid, NceCuda,
                         ::testing::Combine(::testing::Values(1, 64), ::testing::Values(1, 300, 4099),
                                            ::testing::Values(3, 128, 256, 512), ::testing::Values(Mode::Nce, Mode::InfoNce),
                                            ::testing::Bool(), ::testing::Values(at::kFloat, at::kDouble)));

// Late in training a positive is close to its row: at τ = 0.01 its s/τ passes 88.7, where e^{s/τ} is no float32 and
// the kernels take Z's terms in float64 (the split kernel, D = 128: on one lane per row; the rowwise one, D = 16).
// Z first estimated by the op (a pass of its own), then given (the loss kernel's own sum; a Z near the batch's
// keeps the float64 reference's literal log(1 − h) finite).
TEST(NceCudaSmallTau, LossGradientAndZAsInFloat64) {
  PIRL_REQUIRE(at::hasCUDA(), "no CUDA device (or a CPU-only libtorch): CUDA comparisons skipped");
  for (const int64_t D : {128, 16}) {
    const int64_t B = 8, K = 300, N = 257;
    at::manual_seed(D);
    const auto [bank, positives, x] = nearTheirRows(N, D, B, 0.02);
    const at::Tensor negatives = at::randint(N, {B, K}, at::kLong);
    const double zExact =
        pirl::nce::nceLossReference(x.to(at::kDouble), bank.to(at::kDouble), positives, negatives, {0.01, Mode::Nce, -1.0})
            .zBatch.item<double>();
    ASSERT_GT(zExact, 1e38) << "D " << D;  // beyond float32: the case this test is for
    for (const double z : {-1.0, zExact}) {
      SCOPED_TRACE(testing::Message() << "D " << D << ", z " << z);
      const pirl::nce::Options o{0.01, Mode::Nce, z};
      at::Tensor xg = x.cuda().requires_grad_(true);
      auto gpu = pirl::nce::nceLoss(xg, bank.cuda(), positives.cuda(), negatives.cuda(), o, pirl::IndexCheck::Check);
      gpu.loss.backward();
      at::Tensor xr = x.to(at::kDouble).requires_grad_(true);
      auto ref = pirl::nce::nceLossReference(xr, bank.to(at::kDouble), positives, negatives, o);
      ref.loss.backward();
      const at::Tensor exact = xr.grad();
      ASSERT_TRUE(std::isfinite(ref.loss.item<double>()) && at::isfinite(exact).all().item<bool>());
      EXPECT_NEAR(gpu.zBatch.item<double>(), zExact, 1e-4 * zExact);
      EXPECT_NEAR(gpu.loss.item<double>(), ref.loss.item<double>(), 1e-4 * std::abs(ref.loss.item<double>()) + 1e-5);
      EXPECT_LE((xg.grad().cpu().to(at::kDouble) - exact).abs().max().item<double>(), 1e-4 * exact.abs().max().item<double>() + 1e-6);
    }
  }
}

// The paper's scale (B = 256, K = 32,000 per-sample negatives, an ImageNet-sized bank): the split kernel's
// many splits per sample, and indices into a bank of 1.28M rows.
TEST(NceCudaPaperScale, MatchesCpu) {
  PIRL_REQUIRE(at::hasCUDA(), "no CUDA device (or a CPU-only libtorch): CUDA comparisons skipped");
  const int64_t B = 256, K = 32000, D = 128, N = 1281167;
  at::manual_seed(7);
  const auto [bank, positives, x] = nearTheirRows(N, D, B, 0.5);
  const at::Tensor negatives = at::randint(N, {B, K}, at::kLong);
  const at::Tensor bankGpu = bank.cuda();
  for (const Mode mode : {Mode::Nce, Mode::InfoNce}) {
    const pirl::nce::Options o{0.07, mode, -1.0};
    at::Tensor xc = x.clone().requires_grad_(true);
    auto cpu = pirl::nce::nceLoss(xc, bank, positives, negatives, o, pirl::IndexCheck::Check);
    cpu.loss.backward();
    at::Tensor xg = x.cuda().requires_grad_(true);
    auto gpu = pirl::nce::nceLoss(xg, bankGpu, positives.cuda(), negatives.cuda(), o, pirl::IndexCheck::Check);
    gpu.loss.backward();
    // Sums over 32,001 rows in another order: float32 rounding grows with K.
    EXPECT_NEAR(gpu.loss.item<double>(), cpu.loss.item<double>(), 1e-4 * std::abs(cpu.loss.item<double>()) + 1e-6);
    EXPECT_NEAR(gpu.zBatch.item<double>(), cpu.zBatch.item<double>(), 1e-4 * cpu.zBatch.item<double>());
    EXPECT_LE((xg.grad().cpu() - xc.grad()).abs().max().item<double>(), 1e-4 * xc.grad().abs().max().item<double>() + 1e-7);
  }
}

}  // namespace
