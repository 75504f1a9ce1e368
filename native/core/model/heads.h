// PIRL's projection heads (docs/PIRL.md, "Network"): f for the image, g for its 9 jigsaw patches.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "../data/jigsaw.h"

namespace pirl::model {

using data::kJigsawPatches;

// f(v_I) = normalize(Linear(F→D)(pooled res5)).
struct FHeadImpl : torch::nn::Module {
  FHeadImpl(int64_t featureDim, int64_t embeddingDim);
  at::Tensor forward(const at::Tensor& pooled);
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(FHead);

// g(v_It) = normalize(Linear(9·D→D)(concat of Linear(F→D)(each patch), in the sample's order)).
struct GHeadImpl : torch::nn::Module {
  GHeadImpl(int64_t featureDim, int64_t embeddingDim);
  // pooledPatches: (B·9)×F, the 9 patches of each sample consecutive.
  at::Tensor forward(const at::Tensor& pooledPatches);
  torch::nn::Linear patch{nullptr};  // shared by the 9 patches
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(GHead);

}  // namespace pirl::model
