// A module's parameters and buffers by torchvision-style name, and loading them back with checks.
#pragma once

#include <torch/nn/module.h>

#include <string>
#include <utility>
#include <vector>

namespace pirl::model {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Parameters and buffers (BatchNorm running stats and num_batches_tracked), detached views, in
// registration order, names prefixed with `prefix`.
NamedTensors stateDict(const torch::nn::Module& module, const std::string& prefix = "");

// Copies `values` into the module's tensors of the same names. Every name must exist with the same
// shape (c10::ValueError naming it otherwise); with `strict`, every tensor of the module must be given.
void loadStateDict(torch::nn::Module& module, const NamedTensors& values, bool strict);

}  // namespace pirl::model
