// The linear probe (shared/PIRL.md, "Evaluation protocols"): a softmax classifier trained with SGD
// on frozen features, scored on held-out features.
#pragma once

#include <ATen/ATen.h>

namespace pirl::eval {

struct LinearProbeOptions {
  int64_t epochs = 30;
  int64_t batchSize = 256;
  double lr = 0.1;            // cosine-decayed over the run
  double weightDecay = 1e-4;
  uint64_t seed = 0;
};

// Features are standardised with the training set's mean and std first. Returns the test top-1.
double linearProbeAccuracy(const at::Tensor& train, const at::Tensor& trainLabels, const at::Tensor& test,
                           const at::Tensor& testLabels, int64_t numClasses, const LinearProbeOptions& options);

}  // namespace pirl::eval
