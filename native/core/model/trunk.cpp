#include "trunk.h"

#include <c10/util/Exception.h>
#include <torch/nn/functional/pooling.h>
#include <torch/nn/init.h>

#include <array>
#include <cmath>

namespace pirl::model {

namespace nn = torch::nn;

namespace {

nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding).bias(false));
}

Downsample downsampleIfNeeded(int64_t inplanes, int64_t outplanes, int64_t stride) {
  if (stride == 1 && inplanes == outplanes) return nullptr;
  return Downsample(inplanes, outplanes, stride);
}

struct ArchSpec {
  std::array<int64_t, 4> blocks;
  bool bottleneck;
};

ArchSpec archSpec(Arch arch) {
  switch (arch) {
    case Arch::ResNet18: return {{2, 2, 2, 2}, false};
    case Arch::ResNet34: return {{3, 4, 6, 3}, false};
    case Arch::ResNet50: return {{3, 4, 6, 3}, true};
  }
  TORCH_CHECK_TYPE(false, "arch must be ResNet18, ResNet34 or ResNet50, got enum value ", static_cast<int>(arch));
}

}  // namespace

// oneDNN's strided 1×1 convolution writes past its workspace in backward-weights when the input has
// fewer than 16 channels in channels-last (uxlfoundation/oneDNN#6035: heap corruption at 3, 5, 12 or 16
// threads; narrow models such as width 0.125 have them). Such shortcuts subsample first, then convolve
// with unit stride: the same sums, outside that kernel.
constexpr int64_t kNarrowShortcut = 16;

DownsampleImpl::DownsampleImpl(int64_t inplanes, int64_t outplanes, int64_t stride)
    : sliceStride(inplanes < kNarrowShortcut ? stride : 1),
      conv(register_module("0", pirl::model::conv(inplanes, outplanes, 1, stride / sliceStride, 0))),
      bn(register_module("1", BatchNorm(outplanes))) {}

at::Tensor DownsampleImpl::forward(const at::Tensor& x) {
  if (sliceStride == 1) return bn(conv(x));
  return bn(conv(x.slice(2, 0, c10::nullopt, sliceStride).slice(3, 0, c10::nullopt, sliceStride)));
}

BasicBlockImpl::BasicBlockImpl(int64_t inplanes, int64_t planes, int64_t stride)
    : conv1(register_module("conv1", conv(inplanes, planes, 3, stride, 1))),
      conv2(register_module("conv2", conv(planes, planes, 3, 1, 1))),
      bn1(register_module("bn1", BatchNorm(planes))),
      bn2(register_module("bn2", BatchNorm(planes))) {
  downsample = downsampleIfNeeded(inplanes, planes * kExpansion, stride);
  if (downsample) register_module("downsample", downsample);
}

at::Tensor BasicBlockImpl::forward(const at::Tensor& x) {
  at::Tensor out = at::relu(bn1(conv1(x)));
  out = bn2(conv2(out));
  return at::relu(out + (downsample ? downsample->forward(x) : x));
}

BottleneckImpl::BottleneckImpl(int64_t inplanes, int64_t planes, int64_t stride)
    : conv1(register_module("conv1", conv(inplanes, planes, 1, 1, 0))),
      conv2(register_module("conv2", conv(planes, planes, 3, stride, 1))),
      conv3(register_module("conv3", conv(planes, planes * kExpansion, 1, 1, 0))),
      bn1(register_module("bn1", BatchNorm(planes))),
      bn2(register_module("bn2", BatchNorm(planes))),
      bn3(register_module("bn3", BatchNorm(planes * kExpansion))) {
  downsample = downsampleIfNeeded(inplanes, planes * kExpansion, stride);
  if (downsample) register_module("downsample", downsample);
}

at::Tensor BottleneckImpl::forward(const at::Tensor& x) {
  at::Tensor out = at::relu(bn1(conv1(x)));
  out = at::relu(bn2(conv2(out)));
  out = bn3(conv3(out));
  return at::relu(out + (downsample ? downsample->forward(x) : x));
}

TrunkImpl::TrunkImpl(const TrunkOptions& options) : options_(options) {
  const ArchSpec spec = archSpec(options.arch);
  TORCH_CHECK_VALUE(options.width > 0 && std::isfinite(options.width), "width must be a positive number, got ",
                    options.width);
  const auto widthOf = [&](int64_t base) { return std::max<int64_t>(1, std::llround(base * options.width)); };
  const int64_t stemWidth = widthOf(64);
  conv1 = register_module("conv1", options.stem == Stem::Small ? conv(3, stemWidth, 3, 1, 1) : conv(3, stemWidth, 7, 2, 3));
  bn1 = register_module("bn1", BatchNorm(stemWidth));
  int64_t inplanes = stemWidth;
  const int64_t expansion = spec.bottleneck ? BottleneckImpl::kExpansion : BasicBlockImpl::kExpansion;
  std::array<nn::Sequential*, 4> layers{&layer1, &layer2, &layer3, &layer4};
  for (int stage = 0; stage < 4; ++stage) {
    const int64_t planes = widthOf(64 << stage);
    nn::Sequential layer;
    for (int64_t i = 0; i < spec.blocks[stage]; ++i) {
      const int64_t stride = (i == 0 && stage > 0) ? 2 : 1;
      if (spec.bottleneck) {
        layer->push_back(Bottleneck(inplanes, planes, stride));
      } else {
        layer->push_back(BasicBlock(inplanes, planes, stride));
      }
      inplanes = planes * expansion;
    }
    *layers[stage] = register_module("layer" + std::to_string(stage + 1), layer);
  }
  featureDim_ = inplanes;
  // torchvision's initialisation: He (fan_out) for convolutions, BatchNorm as identity.
  for (auto& module : modules(/*include_self=*/false)) {
    if (auto* c = module->as<nn::Conv2d>()) {
      nn::init::kaiming_normal_(c->weight, 0, torch::kFanOut, torch::kReLU);
    } else if (auto* b = module->as<BatchNorm>()) {
      nn::init::ones_(b->weight);
      nn::init::zeros_(b->bias);
    }
  }
}

int64_t minInputSize(Stem stem) {
  // The smallest side that every stride-2 step still halves (at 1 px it would only repeat one pixel): 17 px for
  // the ImageNet stem (conv1, the max-pool, layer2–4), 5 for the small one (layer2–4). The paper's sampler
  // scaled to 96-px views keeps 24-px patches, which a whole-stride rule (32 px) refused.
  const int strideSteps = stem == Stem::Small ? 3 : 5;
  int64_t side = 2;
  for (int step = 1; step < strideSteps; ++step) side = 2 * side - 1;
  return side;
}

at::Tensor TrunkImpl::res5(const at::Tensor& images) {
  at::Tensor x = at::relu(bn1(conv1(images)));
  if (options_.stem == Stem::ImageNet) x = at::max_pool2d(x, {3, 3}, {2, 2}, {1, 1});
  return layer4->forward(layer3->forward(layer2->forward(layer1->forward(x))));
}

at::Tensor TrunkImpl::forward(const at::Tensor& images) { return res5(images).mean({2, 3}); }

void TrunkImpl::sumBatchNormAcrossRanks(const SumAcrossRanks& sum) {
  for (const auto& module : modules(/*include_self=*/false)) {
    if (auto* bn = module->as<BatchNorm>()) bn->sumAcrossRanks = sum;
  }
}

RunningStatsFrozen::RunningStatsFrozen(TrunkImpl& trunk) {
  for (const auto& module : trunk.modules(/*include_self=*/false)) {
    if (auto* bn = module->as<BatchNorm>()) {
      bn->runningFrozen = true;
      frozen_.push_back(bn);
    }
  }
}

RunningStatsFrozen::~RunningStatsFrozen() {
  for (auto* bn : frozen_) bn->runningFrozen = false;
}

}  // namespace pirl::model
