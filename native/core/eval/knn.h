// NPID's weighted kNN classifier (shared/PIRL.md, "Evaluation protocols"): features L2-normalised,
// the k most similar training features vote with weight e^{s/τ}; the argmax class wins.
#pragma once

#include <ATen/ATen.h>

namespace pirl::eval {

// train: N×F features, trainLabels: N int64 in [0, numClasses); test: M×F. Returns M int64 labels.
// Works in chunks of test rows, so memory is O(chunk·N), not O(M·N).
at::Tensor knnPredict(const at::Tensor& train, const at::Tensor& trainLabels, const at::Tensor& test, int64_t k,
                      double tau, int64_t numClasses, int64_t chunk = 256);

}  // namespace pirl::eval
