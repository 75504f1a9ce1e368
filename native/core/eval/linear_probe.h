// The linear probe (docs/PIRL.md, "Evaluation protocols"): a softmax classifier trained with SGD
// on frozen features, scored on held-out features.
#pragma once

#include <ATen/ATen.h>

namespace pirl::eval {

struct LinearProbeOptions {
  int64_t epochs;
  int64_t batchSize;
  double lr;  // cosine-decayed over the run
  double weightDecay;
  uint64_t seed;
};

// Features are standardised with the training set's mean and std first. Returns the test top-1.
double linearProbeAccuracy(const at::Tensor& train, const at::Tensor& trainLabels, const at::Tensor& test,
                           const at::Tensor& testLabels, int64_t numClasses, const LinearProbeOptions& options);

}  // namespace pirl::eval
