#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <set>

#include "core/data/pirl_sampler.h"
#include "core/runtime.h"
#include "presets.h"

namespace {

using namespace pirl::data;

SamplerConfig quiet(int64_t S, int64_t J, int64_t P) {
  SamplerConfig c = pirl::testing::samplerPreset("paper");
  c.imageSize = S;
  c.jigsawSize = J;
  c.patchSize = P;
  c.photometric.jitter = {0, 0, 0, 0};
  c.photometric.photometricProbability = 0;
  c.photometric.grayscaleProbability = 0;
  c.photometric.flipProbability = 0;
  return c;
}

at::Tensor randomImages(int64_t n, int64_t h, int64_t w, int64_t c) {
  return at::randint(256, {n, h, w, c}, at::kByte);
}

TEST(Sampler, SameSeedEpochIndexGivesTheSameTensorsWhateverTheThreadsAndBatch) {
  const at::Tensor source = randomImages(10, 40, 40, 3);
  const SamplerConfig config = pirl::testing::samplerPreset("small");
  const at::Tensor rows = at::arange(10, at::kLong);
  pirl::setNumThreads(1);
  const Batch one = makeBatch(source, rows, rows, 7, 3, config, /*pinned=*/false);
  pirl::setNumThreads(2);
  const Batch two = makeBatch(source, rows, rows, 7, 3, config, /*pinned=*/false);
  EXPECT_TRUE(at::equal(one.images, two.images));
  EXPECT_TRUE(at::equal(one.patches, two.patches));
  EXPECT_TRUE(at::equal(one.permutations, two.permutations));
  // Sample 4 alone, in a batch of its own, is the same sample.
  const at::Tensor four = at::tensor({4}, at::kLong);
  const Batch single = makeBatch(source, four, four, 7, 3, config, /*pinned=*/false);
  EXPECT_TRUE(at::equal(single.images[0], one.images[4]));
  EXPECT_TRUE(at::equal(single.patches[0], one.patches[4]));
  // Another epoch draws again.
  const Batch next = makeBatch(source, rows, rows, 7, 4, config, /*pinned=*/false);
  EXPECT_FALSE(at::equal(next.images, one.images));
}

// A freed batch's memory is the next batch's, up to `keep` buffers of a size; a tensor freed after the pool's
// owner let go still gives its memory back (the tensor holds the pool).
TEST(BatchBuffers, AFreedBuffersMemoryIsReusedUpToKeep) {
  auto pool = BatchBuffers::create(1);
  at::Tensor a = pool->empty({4, 5}, at::kFloat);
  void* first = a.data_ptr();
  a.fill_(1);
  a.reset();
  EXPECT_EQ(pool->keptBuffers(), 1u);
  at::Tensor b = pool->empty({5, 4}, at::kFloat);  // the same bytes
  EXPECT_EQ(b.data_ptr(), first);
  EXPECT_EQ(b.sizes(), (std::vector<int64_t>{5, 4}));
  EXPECT_EQ(pool->keptBuffers(), 0u);
  at::Tensor c = pool->empty({20}, at::kFloat), d = pool->empty({3}, at::kLong);
  EXPECT_NE(c.data_ptr(), first);
  b.reset(), c.reset(), d.reset();
  EXPECT_EQ(pool->keptBuffers(), 2u);  // one of 80 bytes (keep = 1: the second was freed), one of 24
  pool->trim();
  EXPECT_EQ(pool->keptBuffers(), 0u);
  at::Tensor late = pool->empty({3}, at::kLong);
  pool.reset();
  late.fill_(2);
  late.reset();
}

TEST(Sampler, BatchesInLentMemoryAreTheSameBatches) {
  const at::Tensor source = randomImages(6, 40, 40, 3);
  const SamplerConfig config = pirl::testing::samplerPreset("small");
  const at::Tensor rows = at::arange(6, at::kLong);
  const auto pool = BatchBuffers::create(1);
  const Batch fresh = makeBatch(source, rows, rows, 7, 3, config, /*pinned=*/false);
  Batch lent = makeBatch(source, rows, rows, 7, 3, config, /*pinned=*/false, pool.get());
  const void* images = lent.images.data_ptr();
  EXPECT_TRUE(at::equal(fresh.images, lent.images) && at::equal(fresh.patches, lent.patches) && at::equal(fresh.permutations, lent.permutations));
  lent = Batch{};
  // Another epoch in the same memory: every value is written again (nothing of the last batch is left).
  const Batch next = makeBatch(source, rows, rows, 7, 4, config, /*pinned=*/false, pool.get());
  EXPECT_EQ(next.images.data_ptr(), images);
  const Batch expected = makeBatch(source, rows, rows, 7, 4, config, /*pinned=*/false);
  EXPECT_TRUE(at::equal(expected.images, next.images) && at::equal(expected.patches, next.patches) && at::equal(expected.permutations, next.permutations));
}

TEST(Sampler, PatchKComesFromTheCellThePermutationNames) {
  // A 90×90 source whose 30×30 cells have distinct solid colours; the jigsaw crop covers it all.
  at::Tensor source = at::zeros({1, 90, 90, 3}, at::kByte);
  for (int64_t cell = 0; cell < 9; ++cell) {
    source[0].narrow(0, (cell / 3) * 30, 30).narrow(1, (cell % 3) * 30, 30).fill_(static_cast<int64_t>(20 + cell * 25));
  }
  SamplerConfig config = quiet(30, 90, 10);
  config.jigsawScaleMin = config.jigsawScaleMax = 1.0;
  for (int64_t index = 0; index < 20; ++index) {
    const at::Tensor idx = at::tensor({index}, at::kLong);
    const Batch batch = makeBatch(source, at::zeros({1}, at::kLong), idx, 1, 0, config, /*pinned=*/false);
    std::set<int64_t> cells;
    for (int64_t k = 0; k < 9; ++k) {
      const int64_t cell = batch.permutations[0][k].item<int64_t>();
      cells.insert(cell);
      // Undo the normalisation of channel 0 and compare with the cell's colour.
      const double value = (batch.patches[0][k][0].mean().item<double>() * 0.229 + 0.485) * 255;
      EXPECT_NEAR(value, 20 + cell * 25, 0.6) << "sample " << index << " patch " << k;
      EXPECT_NEAR(batch.patches[0][k][0].std().item<double>(), 0, 1e-5) << "a patch lies inside one cell";
    }
    EXPECT_EQ(cells.size(), 9u);
  }
}

TEST(Sampler, PermutationsAreUniform) {
  const at::Tensor source = randomImages(1, 36, 36, 3);
  const int64_t n = 9000;
  const at::Tensor idx = at::arange(n, at::kLong);
  const Batch batch = makeBatch(source, at::zeros({n}, at::kLong), idx, 5, 0, quiet(8, 36, 9), /*pinned=*/false);
  // Each position holds each cell ~n/9 times.
  for (int64_t k = 0; k < 9; ++k) {
    const at::Tensor counts = at::bincount(batch.permutations.select(1, k), {}, 9).to(at::kDouble);
    EXPECT_LT((counts - n / 9.0).abs().max().item<double>(), 6 * std::sqrt(n / 9.0)) << "position " << k;
  }
  // Identity order is rare, distinct orders are many.
  const at::Tensor keys = (batch.permutations * at::pow(9, at::arange(9, at::kLong))).sum(1);
  EXPECT_GT(std::get<0>(at::_unique(keys)).size(0), n * 9 / 10);
}

TEST(Sampler, GraySourcesBecomeRgbAndShapesFollowTheConfig) {
  const at::Tensor source = randomImages(3, 28, 28, 1);
  const at::Tensor rows = at::arange(3, at::kLong);
  const Batch batch = makeBatch(source, rows, rows, 0, 0, quiet(32, 36, 9), /*pinned=*/false);
  EXPECT_EQ(batch.images.sizes(), (std::vector<int64_t>{3, 3, 32, 32}));
  EXPECT_EQ(batch.patches.sizes(), (std::vector<int64_t>{3, 9, 3, 9, 9}));
  // Equal RGB before normalisation.
  const at::Tensor rgb = batch.images * at::tensor({0.229f, 0.224f, 0.225f}).view({1, 3, 1, 1}) +
                         at::tensor({0.485f, 0.456f, 0.406f}).view({1, 3, 1, 1});
  EXPECT_TRUE(at::allclose(rgb.select(1, 0), rgb.select(1, 1), 1e-5, 1e-5));
}

TEST(Sampler, EvalImagesResizeWithoutAugmentation) {
  const at::Tensor source = at::full({2, 20, 20, 3}, 128, at::kByte);
  const at::Tensor out = evalImages(source, at::arange(2, at::kLong), 32);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 3, 32, 32}));
  EXPECT_NEAR(out[0][0][5][5].item<double>(), (128 / 255.0 - 0.485) / 0.229, 1e-5);
}

TEST(Sampler, BadConfigAndRows) {
  const at::Tensor source = randomImages(2, 20, 20, 3);
  const at::Tensor rows = at::arange(2, at::kLong);
  EXPECT_THROW(makeBatch(source, rows, rows, 0, 0, quiet(32, 35, 9), /*pinned=*/false), c10::ValueError);
  EXPECT_THROW(makeBatch(source, rows, rows, 0, 0, quiet(32, 36, 13), /*pinned=*/false), c10::ValueError);
  EXPECT_THROW(makeBatch(source, at::tensor({2}, at::kLong), at::tensor({2}, at::kLong), 0, 0, quiet(8, 9, 3), /*pinned=*/false),
               c10::IndexError);
  EXPECT_THROW(makeBatch(source.to(at::kFloat), rows, rows, 0, 0, quiet(8, 9, 3), /*pinned=*/false), c10::TypeError);
}

Image solid(uint8_t r, uint8_t g, uint8_t b) {
  Image image(2, 2);
  for (size_t i = 0; i < image.pixels.size(); i += 3) {
    image.pixels[i] = r;
    image.pixels[i + 1] = g;
    image.pixels[i + 2] = b;
  }
  return image;
}

TEST(Transforms, ElementaryOps) {
  Image red = solid(255, 0, 0);
  adjustHue(red, 1.0 / 3);  // a third of a turn: red → green
  EXPECT_EQ(red.pixels[0], 0);
  EXPECT_EQ(red.pixels[1], 255);
  Image gray = solid(200, 100, 50);
  grayscale(gray);
  EXPECT_EQ(gray.pixels[0], gray.pixels[1]);
  EXPECT_EQ(gray.pixels[0], 124);  // 0.299·200 + 0.587·100 + 0.114·50 = 124.2
  Image p = solid(0xAB, 0x0F, 0xFF);
  posterize(p, 4);
  EXPECT_EQ(p.pixels[0], 0xA0);
  EXPECT_EQ(p.pixels[1], 0x00);
  Image s = solid(200, 10, 128);
  solarize(s, 128);
  EXPECT_EQ(s.pixels[0], 55);
  EXPECT_EQ(s.pixels[1], 10);
  EXPECT_EQ(s.pixels[2], 127);
  Image b = solid(100, 100, 100);
  adjustBrightness(b, 1.5);
  EXPECT_EQ(b.pixels[0], 150);
  Image ramp(1, 2);
  ramp.pixels = {50, 60, 70, 150, 160, 170};
  autocontrast(ramp);
  EXPECT_EQ(ramp.pixels[0], 0);
  EXPECT_EQ(ramp.pixels[3], 255);
  flipHorizontal(ramp);
  EXPECT_EQ(ramp.pixels[0], 255);
}

}  // namespace
