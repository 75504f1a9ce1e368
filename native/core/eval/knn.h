// NPID's weighted kNN classifier (docs/PIRL.md, "Evaluation protocols"): features L2-normalised,
// the k most similar training features vote with weight e^{s/τ}; the argmax class wins.
#pragma once

#include <ATen/ATen.h>

#include "../stop_flag.h"

namespace pirl::eval {

struct Neighbours {
  at::Tensor similarity;  // M×k float32 cosine similarities, most similar first
  at::Tensor index;       // M×k int64 rows of `features`
};

// Queries per similarity product: memory O(kQueryChunk·N).
constexpr int64_t kQueryChunk = 256;

// The k rows of `features` (N×F) most cosine-similar to each query (M×F), k clamped to N. Works in
// chunks of queries, so memory is O(chunk·N), not O(M·N); `stop` is read between chunks.
Neighbours nearestNeighbours(const at::Tensor& features, const at::Tensor& queries, int64_t k, int64_t chunk = kQueryChunk,
                             const StopFlag* stop = nullptr);

// train: N×F features, trainLabels: N int64 in [0, numClasses); test: M×F. Returns M int64 labels.
at::Tensor knnPredict(const at::Tensor& train, const at::Tensor& trainLabels, const at::Tensor& test, int64_t k,
                      double tau, int64_t numClasses, int64_t chunk = kQueryChunk, const StopFlag* stop = nullptr);

}  // namespace pirl::eval
