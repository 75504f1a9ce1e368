// What PyTorch DDP's Reducer does, for pirl's one model: gradients averaged over the ranks in buckets
// (the first small, so communication starts early), each bucket's allreduce started from an autograd
// hook as soon as its last gradient is computed, so that it runs while backward goes on.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <mutex>
#include <vector>

#include "communicator.h"

namespace pirl::distributed {

// DDP's defaults: 1 MB for the first bucket (the last layers' gradients, ready first), 25 MB after.
constexpr int64_t kFirstBucketBytes = 1 << 20;
constexpr int64_t kBucketBytes = 25 << 20;

class GradientReducer {
 public:
  // `params` in the model's order; buckets are filled from the last parameter backwards (the order
  // backward computes them in).
  GradientReducer(std::vector<at::Tensor> params, std::shared_ptr<Communicator> communicator,
                  int64_t firstBucketBytes = kFirstBucketBytes, int64_t bucketBytes = kBucketBytes);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Before backward: the hooks collect this step's gradients.
  void prepare();
  // After backward: starts the buckets still waiting (a parameter without a gradient counts as zeros),
  // waits for all, and leaves every parameter's .grad the mean over the ranks.
  void finish();

  size_t bucketCount() const { return buckets_.size(); }

 private:
  struct Bucket {
    std::vector<size_t> params;
    std::vector<int64_t> offsets;
    at::Tensor flat;
    size_t ready = 0;
    std::shared_ptr<Communicator::Pending> pending;
  };

  void onGradient(size_t param, const at::Tensor& grad);
  // Starts complete buckets in index order, so every rank starts them in the same order.
  void startReady();

  std::vector<at::Tensor> params_;
  std::shared_ptr<Communicator> communicator_;
  std::vector<Bucket> buckets_;
  std::vector<std::pair<size_t, int64_t>> where_;  // per parameter: bucket and offset
  std::vector<bool> received_;
  std::vector<unsigned> hooks_;
  std::mutex mutex_;
  bool collecting_ = false;
  size_t nextBucket_ = 0;
};

}  // namespace pirl::distributed
