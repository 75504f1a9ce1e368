// The ResNet trunk of PIRL (docs/PIRL.md, "Network"): torchvision's architecture, parameter names
// and initialisation, so weights move between pirl and torchvision unchanged.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <utility>
#include <vector>

#include "batch_norm.h"

namespace pirl::model {

enum class Arch { ResNet18, ResNet34, ResNet50 };

enum class Stem {
  ImageNet,  // 7×7 stride-2 conv + 3×3 max-pool (torchvision)
  Small,     // 3×3 stride-1 conv, no max-pool: for 28–96 px images
};

// Every field is set by the caller: the defaults live in TypeScript (lib/config.ts).
struct TrunkOptions {
  Arch arch;
  Stem stem;
  double width;  // multiplies every stage's width (1: torchvision's)
};

// The projection shortcut: a 1×1 conv of stride `stride` and its BatchNorm, under torchvision's names
// (downsample.0, downsample.1).
struct DownsampleImpl : torch::nn::Module {
  DownsampleImpl(int64_t inplanes, int64_t outplanes, int64_t stride);
  at::Tensor forward(const at::Tensor& x);
  // > 1: the stride is taken by slicing the input before a unit-stride conv (see trunk.cpp).
  int64_t sliceStride;
  torch::nn::Conv2d conv{nullptr};
  BatchNorm bn{nullptr};
};
TORCH_MODULE(Downsample);

// torchvision's BasicBlock (ResNet-18/34).
struct BasicBlockImpl : torch::nn::Module {
  BasicBlockImpl(int64_t inplanes, int64_t planes, int64_t stride);
  at::Tensor forward(const at::Tensor& x);
  static constexpr int64_t kExpansion = 1;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  BatchNorm bn1{nullptr}, bn2{nullptr};
  Downsample downsample{nullptr};
};
TORCH_MODULE(BasicBlock);

// torchvision's Bottleneck (ResNet-50; stride on the 3×3 conv, "ResNet v1.5").
struct BottleneckImpl : torch::nn::Module {
  BottleneckImpl(int64_t inplanes, int64_t planes, int64_t stride);
  at::Tensor forward(const at::Tensor& x);
  static constexpr int64_t kExpansion = 4;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  BatchNorm bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  Downsample downsample{nullptr};
};
TORCH_MODULE(Bottleneck);

// The smallest input side the stem and the four stages accept.
int64_t minInputSize(Stem stem);

struct TrunkImpl : torch::nn::Module {
  explicit TrunkImpl(const TrunkOptions& options);
  // res5 feature map, B×F×h×w.
  at::Tensor res5(const at::Tensor& images);
  // Globally average-pooled res5: the representation, B×F.
  at::Tensor forward(const at::Tensor& images);
  // F: width of the pooled features (512 for ResNet-18/34, 2048 for ResNet-50, times `width`).
  int64_t featureDim() const { return featureDim_; }
  const TrunkOptions& options() const { return options_; }

  // Set: every BatchNorm normalises training batches with the statistics of all ranks' batches
  // (SyncBatchNorm); unset: each rank's own.
  void sumBatchNormAcrossRanks(const SumAcrossRanks& sum);

  torch::nn::Conv2d conv1{nullptr};
  BatchNorm bn1{nullptr};
  torch::nn::Sequential layer1{nullptr}, layer2{nullptr}, layer3{nullptr}, layer4{nullptr};

 private:
  TrunkOptions options_;
  int64_t featureDim_ = 0;
};
TORCH_MODULE(Trunk);

// While alive, the trunk's BatchNorm layers normalise with the batch's statistics as usual but leave
// their running statistics (and their count) unchanged, so a pass does not shift what eval mode uses.
class RunningStatsFrozen {
 public:
  explicit RunningStatsFrozen(TrunkImpl& trunk);
  ~RunningStatsFrozen();
  RunningStatsFrozen(const RunningStatsFrozen&) = delete;
  RunningStatsFrozen& operator=(const RunningStatsFrozen&) = delete;

 private:
  std::vector<BatchNormImpl*> frozen_;
};

}  // namespace pirl::model
