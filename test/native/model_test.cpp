#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <map>
#include <string>

#include "core/model/pirl_model.h"
#include "core/train/precision.h"
#include "presets.h"

namespace {

using namespace pirl::model;

PirlModelOptions small(Arch arch) { return pirl::testing::modelOptions(arch, Stem::Small); }

TEST(Trunk, FeatureWidthsAndParameterCountsOfTorchvision) {
  // torchvision resnet18/34/50 have 11,689,512 / 21,797,672 / 25,557,032 parameters, of which the
  // fc layer has 513,000 / 513,000 / 2,049,000.
  const std::pair<Arch, int64_t> expected[] = {
      {Arch::ResNet18, 11689512 - 513000}, {Arch::ResNet34, 21797672 - 513000}, {Arch::ResNet50, 25557032 - 2049000}};
  for (const auto& [arch, count] : expected) {
    Trunk trunk(TrunkOptions{arch, Stem::ImageNet, 1.0});
    int64_t n = 0;
    for (const auto& p : trunk->parameters()) n += p.numel();
    EXPECT_EQ(n, count) << static_cast<int>(arch);
  }
  EXPECT_EQ(Trunk(TrunkOptions{Arch::ResNet18, Stem::ImageNet, 1.0})->featureDim(), 512);
  EXPECT_EQ(Trunk(TrunkOptions{Arch::ResNet50, Stem::ImageNet, 1.0})->featureDim(), 2048);
  EXPECT_EQ(Trunk(TrunkOptions{Arch::ResNet18, Stem::Small, 0.5})->featureDim(), 256);
}

TEST(Trunk, TorchvisionNames) {
  Trunk trunk(TrunkOptions{Arch::ResNet50, Stem::ImageNet, 1.0});
  const auto named = trunk->named_parameters();
  const auto buffers = trunk->named_buffers();
  for (const char* key : {"conv1.weight", "bn1.weight", "layer1.0.conv3.weight", "layer1.0.downsample.0.weight",
                          "layer1.0.downsample.1.bias", "layer4.2.bn3.weight"}) {
    EXPECT_NE(named.find(key), nullptr) << key;
  }
  for (const char* key : {"bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked", "layer4.2.bn3.running_var"}) {
    EXPECT_NE(buffers.find(key), nullptr) << key;
  }
}

// Narrow shortcuts (< 16 input channels) take their stride by slicing: the same function and gradients as
// the strided 1×1 conv (computed here in float64, where no oneDNN kernel runs), under the same names.
TEST(Trunk, NarrowShortcutsAreTheStridedConvolution) {
  for (const int64_t inplanes : {8, 32}) {
    at::manual_seed(3);
    Downsample shortcut(inplanes, 2 * inplanes, 2);
    EXPECT_EQ(shortcut->sliceStride, inplanes < 16 ? 2 : 1);
    EXPECT_NE(shortcut->named_parameters().find("0.weight"), nullptr);
    EXPECT_NE(shortcut->named_buffers().find("1.running_var"), nullptr);
    shortcut->to(at::kDouble);
    const at::Tensor x = at::randn({4, inplanes, 15, 16}, at::kDouble).requires_grad_(true);
    const at::Tensor w = shortcut->conv->weight.detach().clone().requires_grad_(true);
    const at::Tensor expected = at::batch_norm(at::conv2d(x, w, {}, 2), {}, {}, {}, {}, true, 0.1, 1e-5, false);
    const at::Tensor out = shortcut->forward(x);
    ASSERT_EQ(out.sizes(), expected.sizes());
    EXPECT_TRUE(at::allclose(out, expected, 1e-12, 1e-12));
    const at::Tensor up = at::randn_like(out);
    const auto got = torch::autograd::grad({out}, {x, shortcut->conv->weight}, {up});
    const auto want = torch::autograd::grad({expected}, {x, w}, {up});
    EXPECT_TRUE(at::allclose(got[0], want[0], 1e-12, 1e-12));
    EXPECT_TRUE(at::allclose(got[1], want[1], 1e-12, 1e-12));
  }
}

// Width 0.125 has an 8-channel shortcut; at 3 threads oneDNN's strided kernel corrupted the heap in its
// backward-weights (uxlfoundation/oneDNN#6035). Channels-last float32 steps, the path that reached it.
TEST(Trunk, NarrowChannelsLastTrainsAtOddThreadCounts) {
  const int threads = at::get_num_threads();
  for (const int n : {3, 5}) {
    at::set_num_threads(n);
    Trunk trunk(TrunkOptions{Arch::ResNet18, Stem::Small, 0.125});
    for (auto& p : trunk->parameters()) {
      if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
    }
    for (int step = 0; step < 20; ++step) {
      const at::Tensor x = at::randn({8, 3, 16, 16}).contiguous(at::MemoryFormat::ChannelsLast);
      trunk->forward(x).sum().backward();
    }
    EXPECT_TRUE(trunk->parameters()[0].grad().isfinite().all().item<bool>());
  }
  at::set_num_threads(threads);
}

TEST(PirlModel, ForwardGivesUnitEmbeddingsForBothPasses) {
  PirlModel model(small(Arch::ResNet18));
  const at::Tensor images = at::randn({4, 3, 32, 32});
  const at::Tensor patches = at::randn({4, 9, 3, 12, 12});
  const Embeddings e = model->forward(images, patches);
  EXPECT_EQ(e.f.sizes(), (std::vector<int64_t>{4, 128}));
  EXPECT_EQ(e.g.sizes(), (std::vector<int64_t>{4, 128}));
  EXPECT_TRUE(at::allclose(e.f.norm(2, 1), at::ones({4}), 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(e.g.norm(2, 1), at::ones({4}), 1e-5, 1e-5));
  (e.f.sum() + e.g.sum()).backward();
  EXPECT_TRUE(model->trunk->conv1->weight.grad().defined());
  EXPECT_TRUE(model->gHead->patch->weight.grad().defined());
}

TEST(PirlModel, Bf16EmbeddingsAreFp32UnitRows) {
  // Normalised in bf16, the rows were up to 3e-3 off unit length.
  at::manual_seed(3);  // libtorch seeds its default generator at random: the weights too, so a failure reproduces
  PirlModel model(small(Arch::ResNet18));
  const at::Tensor images = at::randn({8, 3, 32, 32});
  const at::Tensor patches = at::randn({8, 9, 3, 12, 12});
  const pirl::train::AutocastScope bf16(c10::kCPU, pirl::train::Precision::Bf16);
  const Embeddings e = model->forward(images, patches);
  for (const at::Tensor& x : {e.f, e.g}) {
    EXPECT_EQ(x.scalar_type(), at::kFloat);
    EXPECT_LT((x.norm(2, 1) - 1).abs().max().item<double>(), 1e-6);
  }
}

TEST(PirlModel, PatchOrderMattersToG) {
  PirlModel model(small(Arch::ResNet18));
  model->eval();
  const at::Tensor images = at::randn({2, 3, 32, 32});
  const at::Tensor patches = at::randn({2, 9, 3, 12, 12});
  const at::Tensor permuted = patches.index_select(1, at::tensor({8, 7, 6, 5, 4, 3, 2, 1, 0}, at::kLong));
  const auto a = model->forward(images, patches), b = model->forward(images, permuted);
  EXPECT_TRUE(at::allclose(a.f, b.f));
  EXPECT_FALSE(at::allclose(a.g, b.g, 1e-4, 1e-4));
}

TEST(PirlModel, EmbedIsEvalNoGradAndRestoresTheMode) {
  PirlModel model(small(Arch::ResNet18));
  model->train();
  const at::Tensor images = at::randn({3, 3, 32, 32});
  const at::Tensor res5 = model->embed(images, EmbedLayer::Res5);
  EXPECT_EQ(res5.sizes(), (std::vector<int64_t>{3, 512}));
  EXPECT_FALSE(res5.requires_grad());
  EXPECT_TRUE(model->is_training());
  EXPECT_TRUE(at::allclose(model->embed(images.narrow(0, 0, 1), EmbedLayer::Res5), res5.narrow(0, 0, 1), 1e-5, 1e-5))
      << "eval mode: a sample's features do not depend on its batch";
  EXPECT_EQ(model->embed(images, EmbedLayer::F).sizes(), (std::vector<int64_t>{3, 128}));
}

TEST(PirlModel, ChannelsLastComputesTheSameFunction) {
  PirlModelOptions o = small(Arch::ResNet18);
  PirlModel a(o);
  o.channelsLast = true;
  PirlModel b(o);
  // same weights
  auto pa = a->named_parameters(), pb = b->named_parameters();
  torch::NoGradGuard g;
  for (auto& item : pa) pb[item.key()].copy_(item.value());
  a->eval();
  b->eval();
  const at::Tensor images = at::randn({2, 3, 32, 32});
  EXPECT_TRUE(at::allclose(a->embed(images, EmbedLayer::Res5), b->embed(images, EmbedLayer::Res5), 1e-4, 1e-4));
}

// Running means and variances of the trunk, by name (num_batches_tracked left out: see the test below).
std::map<std::string, at::Tensor> runningStats(PirlModel& model) {
  std::map<std::string, at::Tensor> out;
  for (const auto& item : model->trunk->named_buffers()) {
    if (item.key().find("running_") != std::string::npos) out[item.key()] = item.value().clone();
  }
  return out;
}

TEST(PirlModel, OnlyTheImagePassSetsRunningStatsUnlessAsked) {
  PirlModelOptions o = small(Arch::ResNet18);
  o.trunk.width = 0.25;
  const at::Tensor images = at::randn({4, 3, 32, 32});
  const at::Tensor patches = at::randn({4, 9, 3, 10, 10}) * 3 + 1;
  PirlModel imagesOnly(o), model(o);
  o.patchRunningStats = true;
  PirlModel both(o);
  {
    torch::NoGradGuard noGrad;
    for (PirlModel* m : {&model, &both}) {
      auto params = (*m)->named_parameters();
      for (const auto& item : imagesOnly->named_parameters()) params[item.key()].copy_(item.value());
    }
  }
  for (PirlModel* m : {&imagesOnly, &model, &both}) (*m)->train();
  imagesOnly->trunk->forward(images);
  model->forward(images, patches);
  both->forward(images, patches);
  const auto expected = runningStats(imagesOnly), got = runningStats(model), mixed = runningStats(both);
  ASSERT_EQ(got.size(), expected.size());
  ASSERT_GT(got.size(), 0u);
  int differing = 0;
  for (const auto& [name, value] : expected) {
    EXPECT_TRUE(at::equal(got.at(name), value)) << name;
    differing += at::allclose(mixed.at(name), value, 1e-4, 1e-4) ? 0 : 1;
  }
  EXPECT_EQ(differing, static_cast<int>(expected.size())) << "with patchRunningStats every running statistic moves";
  // With them, the patches' pass comes first, the images' last (VISSL's order): as the trunk run by hand so, not the other way.
  const at::Tensor flat = patches.reshape({36, 3, 10, 10});
  PirlModel patchesFirst(o), imagesFirst(o);
  for (PirlModel* m : {&patchesFirst, &imagesFirst}) {
    torch::NoGradGuard noGrad;
    auto params = (*m)->named_parameters();
    for (const auto& item : imagesOnly->named_parameters()) params[item.key()].copy_(item.value());
    (*m)->train();
  }
  patchesFirst->trunk->forward(flat);
  patchesFirst->trunk->forward(images);
  imagesFirst->trunk->forward(images);
  imagesFirst->trunk->forward(flat);
  const auto byHand = runningStats(patchesFirst), reversed = runningStats(imagesFirst);
  int reversedDiffers = 0;
  for (const auto& [name, value] : byHand) {
    EXPECT_TRUE(at::allclose(mixed.at(name), value, 1e-5, 1e-5)) << name;
    reversedDiffers += at::allclose(reversed.at(name), value, 1e-4, 1e-4) ? 0 : 1;
  }
  EXPECT_GT(reversedDiffers, 0) << "the order shows in the statistics";
  for (const auto& module : model->trunk->modules(false)) {
    if (auto* bn = module->as<pirl::model::BatchNorm>()) {
      EXPECT_EQ(bn->momentum, 0.1);
      EXPECT_FALSE(bn->runningFrozen);
      EXPECT_EQ(bn->num_batches_tracked.item<int64_t>(), 1) << "the image pass alone counts";
    }
  }
}

// Patches whose batch variance overflows float32 (finite values of 1e20): the patch pass leaves eval mode's
// statistics as they were; with momentum 0 they became 0 × inf = NaN, and every later embedding NaN.
TEST(PirlModel, APatchPassOfHugeValuesLeavesTheRunningStatsFinite) {
  PirlModelOptions o = small(Arch::ResNet18);
  o.trunk.width = 0.25;
  PirlModel model(o);
  model->train();
  const at::Tensor images = at::randn({4, 3, 32, 32});
  const at::Tensor patches = at::full({4, 9, 3, 10, 10}, 1e20) * (at::rand({4, 9, 3, 10, 10}) > 0.5).to(at::kFloat);
  model->forward(images, patches);
  for (const auto& [name, value] : runningStats(model)) EXPECT_TRUE(at::isfinite(value).all().item<bool>()) << name;
}

TEST(PirlModel, BadOptionsAndShapes) {
  PirlModelOptions o = small(Arch::ResNet18);
  o.trunk.width = 0;
  EXPECT_THROW(PirlModel{o}, c10::ValueError);
  o = small(Arch::ResNet18);
  o.embeddingDim = 0;
  EXPECT_THROW(PirlModel{o}, c10::ValueError);
  PirlModel model(small(Arch::ResNet18));
  EXPECT_THROW(model->forward(at::randn({2, 3, 32, 32}), at::randn({2, 8, 3, 12, 12})), c10::ValueError);
}

}  // namespace
