// The linear probe (docs/PIRL.md, "Evaluation protocols"): a softmax classifier trained with SGD
// on frozen features, scored on held-out features.
#pragma once

#include <ATen/ATen.h>

#include "../stop_flag.h"

namespace pirl::eval {

struct LinearProbeOptions {
  int64_t epochs;
  int64_t batchSize;
  double lr;  // cosine-decayed over the run
  double weightDecay;
  uint64_t seed;
  const StopFlag* stop = nullptr;  // read between SGD steps
};

// A trained probe: features are standardised by the training set's mean and std (1×F each), then
// logits = x·weight + bias (weight F×C, bias C); all float32 on the CPU.
struct LinearClassifier {
  at::Tensor mean, std, weight, bias;
};

// The probe trained on `train` (N×F) and its labels in [0, numClasses).
LinearClassifier trainLinearProbe(const at::Tensor& train, const at::Tensor& trainLabels, int64_t numClasses,
                                  const LinearProbeOptions& options);
// The most likely class of each row of `features` (M×F): M int64 labels.
at::Tensor predictLinear(const LinearClassifier& probe, const at::Tensor& features);

// trainLinearProbe on train, scored on test: the test top-1.
double linearProbeAccuracy(const at::Tensor& train, const at::Tensor& trainLabels, const at::Tensor& test,
                           const at::Tensor& testLabels, int64_t numClasses, const LinearProbeOptions& options);

}  // namespace pirl::eval
