// The PIRL network: one trunk (shared weights) embedding the images and, in a second pass, their
// jigsaw patches (BatchNorm statistics per pass, as in VISSL), with the f and g heads on top.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <string>

#include "heads.h"
#include "trunk.h"

namespace pirl::model {

// Every field is set by the caller: the defaults live in TypeScript (lib/config.ts).
struct PirlModelOptions {
  TrunkOptions trunk;
  int64_t embeddingDim;  // D of f and g
  bool channelsLast;     // NHWC activations and weights
  // Whether the jigsaw pass also moves the BatchNorm running statistics (VISSL: yes). They serve eval
  // mode, which sees whole images, so only the image pass needs to set them.
  bool patchRunningStats;
};

struct Embeddings {
  at::Tensor f;  // B×D, unit rows
  at::Tensor g;  // B×D, unit rows
};

enum class EmbedLayer { Res5, F };

// ResNet weights stay within a few units, normalised images too: past 10^4 they are what overflowed.
constexpr double kOverflowing = 1e4;

struct WeightExtremes {
  std::string firstNonFinite;  // the first parameter or BatchNorm statistic holding NaN or infinity, "" if none
  std::string largest;         // the parameter holding the largest |weight| (of the finite ones)
  double largestValue = -1;
};

// Which tensors a state dict covers: the whole model, or the trunk under torchvision's names.
enum class StateDictScope { All, Trunk };

struct PirlModelImpl : torch::nn::Module {
  explicit PirlModelImpl(const PirlModelOptions& options);

  // images: B×3×H×W; patches: B×9×3×P×P in the sample's (permuted) order.
  Embeddings forward(const at::Tensor& images, const at::Tensor& patches);
  // Features for transfer or kNN, in eval mode and without autograd; the training mode is restored.
  at::Tensor embed(const at::Tensor& images, EmbedLayer layer);

  // Puts parameters and buffers into NHWC when channelsLast is set (after construction or a move).
  void applyMemoryFormat();
  at::Tensor prepare(const at::Tensor& images) const;

  const PirlModelOptions& options() const { return options_; }
  // Where the parameters are: the model is the one owner of its device.
  c10::Device device() const;
  // What a non-finite result needs said of the weights (a diverged run's); one read of each, only once one is found.
  // `statistics`: BatchNorm's running statistics too (not after a training-mode pass, which has just moved them).
  WeightExtremes weightExtremes(bool statistics) const;
  // Whether BatchNorm's running statistics are all finite: a 0-dim bool where the model is, not read. A training-mode
  // pass over inputs whose variance passes float32's range leaves them infinite while its results stay finite.
  at::Tensor statisticsFinite() const;
  torch::nn::Module& scope(StateDictScope scope);

  Trunk trunk{nullptr};
  FHead fHead{nullptr};
  GHead gHead{nullptr};

 private:
  PirlModelOptions options_;
};
TORCH_MODULE(PirlModel);

}  // namespace pirl::model
