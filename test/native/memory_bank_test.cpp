#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>

#include "core/memory_bank.h"
#include "core/unit_rows.h"

namespace {

TEST(MemoryBank, InitialRowsAreUnitAndSeeded) {
  pirl::MemoryBank a(500, 16, 7), b(500, 16, 7), c(500, 16, 8);
  EXPECT_TRUE(at::allclose(a.rows().norm(2, 1), at::ones({500}), 1e-5, 1e-6));
  EXPECT_TRUE(at::equal(a.rows(), b.rows()));
  EXPECT_FALSE(at::equal(a.rows(), c.rows()));
  // uniform(±1/sqrt(D/3)) before normalising: each coordinate has variance 1/D, so after
  // normalisation the coordinates stay spread in both signs with mean ~0.
  EXPECT_LT(std::abs(a.rows().mean().item<double>()), 0.01);
}

TEST(MemoryBank, UpdateIsMomentumThenNormalise) {
  pirl::MemoryBank bank(10, 4, 1);
  const at::Tensor before = bank.rows().clone();
  const at::Tensor idx = at::tensor({3, 7}, at::kLong);
  at::Tensor f = at::randn({2, 4});
  f = f / f.norm(2, 1, true);
  bank.update(idx, f, 0.5, pirl::IndexCheck::Check);
  at::Tensor expected = 0.5 * before.index_select(0, idx) + 0.5 * f;
  expected = expected / expected.norm(2, 1, true);
  EXPECT_TRUE(at::allclose(bank.rows().index_select(0, idx), expected, 1e-6, 1e-6));
  // untouched rows stay as they were
  const at::Tensor others = at::tensor({0, 1, 2, 4, 5, 6, 8, 9}, at::kLong);
  EXPECT_TRUE(at::equal(bank.rows().index_select(0, others), before.index_select(0, others)));
}

TEST(MemoryBank, ARepeatedIndexIsUpdatedOnceWithTheMeanOfItsRows) {
  pirl::MemoryBank bank(6, 3, 2), swapped(6, 3, 2);
  const at::Tensor before = bank.rows().clone();
  at::Tensor f = at::randn({3, 3});
  f = f / f.norm(2, 1, true);
  bank.update(at::tensor({4, 1, 4}, at::kLong), f, 0.5, pirl::IndexCheck::Check);
  swapped.update(at::tensor({4, 4, 1}, at::kLong), f.index_select(0, at::tensor({2, 0, 1}, at::kLong)), 0.5, pirl::IndexCheck::Check);
  at::Tensor expected = 0.5 * before[4] + 0.5 * (f[0] + f[2]) / 2;
  expected = expected / expected.norm();
  EXPECT_TRUE(at::allclose(bank.rows()[4], expected, 1e-6, 1e-6));
  EXPECT_TRUE(at::allclose(bank.rows(), swapped.rows(), 1e-6, 1e-6)) << "the order of the batch must not matter";
}

// An update with no direction left keeps its row (normalised, it was a row of zeros, which a restore refuses): f̂ = −m
// at μ = 0.5, and a repeated index's opposite rows at μ = 0. The batch's other rows update as ever.
TEST(MemoryBank, AnUpdateThatCancelsKeepsItsRow) {
  pirl::MemoryBank bank(6, 3, 2);
  const at::Tensor before = bank.rows().clone();
  const at::Tensor e = at::tensor({1.0f, 0.0f, 0.0f});
  const at::Tensor idx = at::tensor({1, 3}, at::kLong), fHat = at::stack({-before[1], e});
  bank.update(idx, fHat, 0.5, pirl::IndexCheck::Check);
  EXPECT_TRUE(at::equal(bank.rows()[1], before[1]));
  // Row 3 bit for bit as the rule before this one made it (normalised, zero rows left zero); the rest untouched.
  EXPECT_TRUE(at::equal(bank.rows()[3], pirl::unitRows(0.5 * before.index_select(0, idx) + (1 - 0.5) * fHat)[1]));
  for (const int64_t row : {0, 2, 4, 5}) EXPECT_TRUE(at::equal(bank.rows()[row], before[row])) << row;
  bank.update(at::tensor({2, 2}, at::kLong), at::stack({e, -e}), 0.0, pirl::IndexCheck::Check);
  EXPECT_TRUE(at::equal(bank.rows()[2], before[2]));
  EXPECT_NEAR(bank.rows().norm(2, 1).min().item<double>(), 1.0, 1e-6);
}

TEST(MemoryBank, SamplingIsSeededUniformAndCanExcludeThePositive) {
  pirl::MemoryBank a(50, 4, 3), b(50, 4, 3);
  EXPECT_TRUE(at::equal(a.sampleNegatives(8, 100), b.sampleNegatives(8, 100)));
  const at::Tensor draws = a.sampleNegatives(64, 5000);
  EXPECT_EQ(draws.sizes(), (std::vector<int64_t>{64, 5000}));
  EXPECT_GE(draws.min().item<int64_t>(), 0);
  EXPECT_LT(draws.max().item<int64_t>(), 50);
  // uniform: every row drawn, counts within 6 sigma of 64·5000/50
  const at::Tensor counts = at::bincount(draws.reshape(-1), {}, 50).to(at::kDouble);
  const double mean = 64.0 * 5000 / 50, sigma = std::sqrt(mean);
  EXPECT_LT((counts - mean).abs().max().item<double>(), 6 * sigma);

  const at::Tensor positives = at::arange(64, at::kLong) % 50;
  const at::Tensor excluded = a.sampleNegatives(64, 2000, positives);
  EXPECT_FALSE((excluded == positives.unsqueeze(1)).any().item<bool>());
  EXPECT_LT(excluded.max().item<int64_t>(), 50);
  const at::Tensor perRow = at::bincount(excluded[0], {}, 50);
  EXPECT_EQ(perRow[0].item<int64_t>(), 0);
  EXPECT_GT(perRow[49].item<int64_t>(), 0);

  const at::Tensor shared = a.sampleShared(30);
  EXPECT_EQ(shared.sizes(), (std::vector<int64_t>{30}));
}

TEST(MemoryBank, GeneratorStateRestoresTheSameDraws) {
  pirl::MemoryBank bank(100, 8, 4);
  bank.sampleNegatives(4, 10);
  pirl::MemoryBank restored(bank.rows().clone(), bank.generatorState());
  EXPECT_TRUE(at::equal(bank.sampleNegatives(4, 10), restored.sampleNegatives(4, 10)));
  EXPECT_TRUE(at::equal(bank.sampleShared(7), restored.sampleShared(7)));
}

// Keyed streams: a sample's negatives depend on (seed, its key) alone — not on the batch it is in, its
// place there, or the generator's state — and are uniform; other seeds or keys give other draws.
TEST(MemoryBank, KeyedStreamsDrawPerSampleWhateverTheBatch) {
  pirl::MemoryBank bank(1000, 4, 3);
  const pirl::NegativeStreams all{11, at::tensor({5, 42, 7, 900}, at::kLong)};
  const at::Tensor together = bank.sampleNegatives(4, 64, at::Tensor(), all);
  bank.sampleNegatives(3, 10);  // moves the bank's own generator: keyed draws do not use it
  const at::Tensor apart = bank.sampleNegatives(2, 64, at::Tensor(), {11, at::tensor({7, 42}, at::kLong)});
  EXPECT_TRUE(at::equal(apart[0], together[2]));
  EXPECT_TRUE(at::equal(apart[1], together[1]));
  EXPECT_FALSE(at::equal(together[0], together[1]));
  EXPECT_FALSE(at::equal(bank.sampleNegatives(4, 64, at::Tensor(), {12, all.keys}), together));
  // Excluding the positive: the same streams, stepped over it.
  const at::Tensor excluded = bank.sampleNegatives(4, 2000, all.keys, all);
  EXPECT_FALSE((excluded == all.keys.unsqueeze(1)).any().item<bool>());
  const at::Tensor counts = at::bincount(bank.sampleNegatives(4, 50000, at::Tensor(), all).reshape(-1), {}, 1000).to(at::kDouble);
  EXPECT_LT((counts - 200).abs().max().item<double>(), 6 * std::sqrt(200.0));
  EXPECT_TRUE(at::equal(bank.sampleShared(30, all), bank.sampleShared(30, {11, at::tensor({1}, at::kLong)})));
  EXPECT_THROW(bank.sampleNegatives(3, 8, at::Tensor(), all), c10::ValueError);  // 4 keys for 3 samples
}

TEST(MemoryBank, BadIndicesAreRangeErrorsNeverReads) {
  pirl::MemoryBank bank(10, 4, 1);
  EXPECT_THROW(bank.get(at::tensor({0, 10}, at::kLong)), c10::IndexError);
  EXPECT_THROW(bank.get(at::tensor({-1}, at::kLong)), c10::IndexError);
  EXPECT_THROW(bank.update(at::tensor({11}, at::kLong), at::full({1, 4}, 0.5), 0.5, pirl::IndexCheck::Check), c10::IndexError);
  EXPECT_THROW(bank.update(at::tensor({1}, at::kLong), at::randn({1, 3}), 0.5, pirl::IndexCheck::Check), c10::ValueError);
  const at::Tensor unit = at::tensor({0.5, 0.5, 0.5, 0.5}, at::kFloat).view({1, 4});
  EXPECT_THROW(bank.update(at::tensor({1}, at::kLong), unit, 1.0, pirl::IndexCheck::Check), c10::ValueError);  // the momentum
  EXPECT_THROW(bank.update(at::tensor({1}, at::kLong), unit * 2, 0.5, pirl::IndexCheck::Check), c10::ValueError);  // not a unit row
  bank.update(at::tensor({1}, at::kLong), unit, 0.5, pirl::IndexCheck::Check);
  EXPECT_THROW(bank.get(at::tensor({1}, at::kInt)), c10::TypeError);
  EXPECT_THROW(pirl::MemoryBank(0, 4, 1), c10::ValueError);
  pirl::MemoryBank single(1, 4, 1);
  EXPECT_THROW(single.sampleNegatives(1, 3, at::tensor({0}, at::kLong)), c10::ValueError);
}

}  // namespace

// Which work may overlap which on one bank (MemoryBank::Use), every pair of kinds, and each let go at its end.
TEST(MemoryBank, UsesOverlapOnlyAsReadsWithReadsAndStepsWithSteps) {
  using Kind = pirl::MemoryBank::Use::Kind;
  auto bank = std::make_shared<pirl::MemoryBank>(8, 4, 0);
  const Kind kinds[] = {Kind::Step, Kind::Read, Kind::Write};
  const char* names[] = {"step", "read", "write"};
  for (int held = 0; held < 3; ++held) {
    for (int next = 0; next < 3; ++next) {
      pirl::MemoryBank::Use first(bank, kinds[held], "first");
      const bool overlaps = kinds[held] == kinds[next] && kinds[held] != Kind::Write;
      SCOPED_TRACE(std::string(names[next]) + " during a " + names[held]);
      if (overlaps) {
        EXPECT_NO_THROW(pirl::MemoryBank::Use(bank, kinds[next], "second"));
      } else {
        try {
          pirl::MemoryBank::Use second(bank, kinds[next], "second()");
          ADD_FAILURE() << "not refused";
        } catch (const std::logic_error& e) {
          EXPECT_NE(std::string(e.what()).find("await it before second()"), std::string::npos) << e.what();
        }
      }
      EXPECT_EQ(kinds[held] == Kind::Read, [&] {
        try {
          bank->refuseWhileChanging("state()");
          return true;
        } catch (const std::logic_error&) {
          return false;
        }
      }());
    }
  }
  // All let go: a write is taken again.
  EXPECT_NO_THROW(pirl::MemoryBank::Use(bank, Kind::Write, "again"));
}
