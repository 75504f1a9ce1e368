// The trunk's BatchNorm: torch.nn.BatchNorm2d's maths, parameters, buffers and names, whose training
// statistics can also span every rank of a data-parallel run (PyTorch's SyncBatchNorm), so that N ranks
// of B images normalise as one process with N·B would. (Not a subclass of torch::nn::BatchNorm2dImpl:
// Debian's libtorch does not export its base's virtual functions.)
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <functional>

namespace pirl::model {

// Sums a tensor over the ranks of a data-parallel run, in place, on every rank.
using SumAcrossRanks = std::function<void(at::Tensor&)>;

struct BatchNormImpl : torch::nn::Cloneable<BatchNormImpl> {
  explicit BatchNormImpl(int64_t features);
  void reset() override;
  // x: N×C×H×W; in training mode normalised with the batch's statistics, which move the running ones.
  at::Tensor forward(const at::Tensor& x);

  int64_t features;
  double eps = 1e-5;
  double momentum = 0.1;  // torch.nn.BatchNorm2d's, which ResNet uses
  // Set (RunningStatsFrozen): a training pass normalises with its batch's statistics and neither moves nor counts the
  // running ones — not even by 0×: an infinite batch variance made them NaN for good.
  bool runningFrozen = false;
  at::Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  // Set: training batches are normalised with the statistics of every rank's batch (the forward and the
  // backward each sum per-channel statistics across ranks); unset: this rank's batch alone.
  SumAcrossRanks sumAcrossRanks;
};
TORCH_MODULE(BatchNorm);

// Batch normalisation of x (N×C×…) in training mode with statistics over every rank's x: y, and the
// running statistics moved by `momentum` towards the global mean and unbiased variance. Differentiable
// in x, weight and bias; weight and bias get this rank's share of their gradient (the data-parallel
// gradient average completes it), x its full gradient. Half and bf16 x compute in fp32 (y is x's dtype).
at::Tensor syncBatchNorm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, at::Tensor& runningMean,
                         at::Tensor& runningVar, double momentum, double eps, const SumAcrossRanks& sum);

}  // namespace pirl::model
