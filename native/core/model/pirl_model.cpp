#include "pirl_model.h"

#include <c10/util/Exception.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cmath>

namespace pirl::model {

namespace {
// Checked before any module is built: a zero-width head would fail inside libtorch's initialiser.
const PirlModelOptions& checked(const PirlModelOptions& options) {
  TORCH_CHECK_VALUE(options.embeddingDim >= 1, "embeddingDim must be >= 1, got ", options.embeddingDim);
  return options;
}
}  // namespace

PirlModelImpl::PirlModelImpl(const PirlModelOptions& options)
    : trunk(register_module("trunk", Trunk(checked(options).trunk))),
      fHead(register_module("fHead", FHead(trunk->featureDim(), options.embeddingDim))),
      gHead(register_module("gHead", GHead(trunk->featureDim(), options.embeddingDim))),
      options_(options) {
  applyMemoryFormat();
}

c10::Device PirlModelImpl::device() const { return trunk->conv1->weight.device(); }

WeightExtremes PirlModelImpl::weightExtremes(bool statistics) const {
  WeightExtremes w;
  for (const auto& item : named_parameters()) {
    const double m = item.value().detach().abs().max().item<double>();
    if (!std::isfinite(m)) {
      w.firstNonFinite = item.key();
      return w;
    }
    if (m > w.largestValue) {
      w.largestValue = m;
      w.largest = item.key();
    }
  }
  // Running statistics that a training-mode pass over overflowing inputs left NaN make every eval-mode result NaN.
  if (!statistics) return w;
  for (const auto& item : named_buffers()) {
    if (item.value().is_floating_point() && !at::isfinite(item.value()).all().item<bool>()) {
      w.firstNonFinite = item.key();
      return w;
    }
  }
  return w;
}

at::Tensor PirlModelImpl::statisticsFinite() const {
  std::vector<at::Tensor> flat;
  for (const at::Tensor& b : buffers()) {
    if (b.is_floating_point()) flat.push_back(b.reshape(-1));
  }
  if (flat.empty()) return at::ones({}, at::TensorOptions(at::kBool).device(device()));
  return at::isfinite(at::cat(flat)).all();
}

torch::nn::Module& PirlModelImpl::scope(StateDictScope scope) {
  if (scope == StateDictScope::Trunk) return *trunk;
  return *this;
}

void PirlModelImpl::applyMemoryFormat() {
  if (!options_.channelsLast) return;
  for (auto& p : parameters()) {
    if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
  }
}

at::Tensor PirlModelImpl::prepare(const at::Tensor& images) const {
  return options_.channelsLast ? images.contiguous(at::MemoryFormat::ChannelsLast) : images;
}

Embeddings PirlModelImpl::forward(const at::Tensor& images, const at::Tensor& patches) {
  TORCH_CHECK_VALUE(patches.dim() == 5 && patches.size(1) == kJigsawPatches && patches.size(0) == images.size(0),
                    "patches must be B×9×3×P×P with B = ", images.size(0), ", got ", patches.sizes());
  const at::Tensor flat = patches.reshape({patches.size(0) * kJigsawPatches, patches.size(2), patches.size(3), patches.size(4)});
  // The patches first, as VISSL's PIRL (its inputs: patches, images): with patchRunningStats the images' batch has
  // the last word in BatchNorm's running statistics, which eval mode uses.
  at::Tensor g;
  {
    c10::optional<RunningStatsFrozen> frozen;
    if (!options_.patchRunningStats) frozen.emplace(*trunk);
    g = gHead(trunk(prepare(flat)));
  }
  const at::Tensor f = fHead(trunk(prepare(images)));
  return {f, g};
}

at::Tensor PirlModelImpl::embed(const at::Tensor& images, EmbedLayer layer) {
  const bool wasTraining = is_training();
  eval();
  at::Tensor out;
  try {
    torch::NoGradGuard noGrad;
    const at::Tensor pooled = trunk(prepare(images));
    out = layer == EmbedLayer::F ? fHead(pooled) : pooled;
  } catch (...) {
    train(wasTraining);
    throw;
  }
  train(wasTraining);
  return out;
}

}  // namespace pirl::model
