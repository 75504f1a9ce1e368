#include "gradient_reducer.h"

#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>

namespace pirl::distributed {

GradientReducer::GradientReducer(std::vector<at::Tensor> params, std::shared_ptr<Communicator> communicator,
                                 int64_t firstBucketBytes, int64_t bucketBytes)
    : params_(std::move(params)), communicator_(std::move(communicator)), where_(params_.size()),
      received_(params_.size(), false) {
  TORCH_CHECK_VALUE(!params_.empty(), "GradientReducer needs parameters");
  int64_t used = 0;  // bytes in the bucket being filled
  for (size_t k = params_.size(); k-- > 0;) {
    const at::Tensor& p = params_[k];
    TORCH_CHECK_VALUE(p.requires_grad(), "parameter ", k, " does not require a gradient");
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    const int64_t cap = buckets_.size() <= 1 ? firstBucketBytes : bucketBytes;
    const bool sameKind = !buckets_.empty() && params_[buckets_.back().params.front()].options().type_equal(p.options());
    if (!sameKind || used + bytes > cap) {  // a parameter larger than the cap gets a bucket of its own
      buckets_.emplace_back();
      used = 0;
    }
    Bucket& b = buckets_.back();
    const int64_t offset = b.offsets.empty() ? 0 : b.offsets.back() + params_[b.params.back()].numel();
    where_[k] = {buckets_.size() - 1, offset};
    b.params.push_back(k);
    b.offsets.push_back(offset);
    used += bytes;
  }
  for (Bucket& b : buckets_) {
    const at::Tensor& last = params_[b.params.back()];
    b.flat = at::zeros({b.offsets.back() + last.numel()}, last.options().requires_grad(false));
  }
  for (size_t k = 0; k < params_.size(); ++k) {
    hooks_.push_back(params_[k].register_hook([this, k](const at::Tensor& grad) { onGradient(k, grad); }));
  }
}

GradientReducer::~GradientReducer() {
  for (size_t k = 0; k < hooks_.size(); ++k) params_[k].remove_hook(hooks_[k]);
}

void GradientReducer::prepare() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (Bucket& b : buckets_) b.ready = 0, b.pending.reset();
  std::fill(received_.begin(), received_.end(), false);
  nextBucket_ = 0;
  collecting_ = true;
}

void GradientReducer::onGradient(size_t param, const at::Tensor& grad) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!collecting_) return;  // a backward outside a distributed step (e.g. a test's own)
  const auto [bucket, offset] = where_[param];
  Bucket& b = buckets_[bucket];
  b.flat.narrow(0, offset, grad.numel()).copy_(grad.reshape(-1));
  received_[param] = true;
  ++b.ready;
  startReady();
}

void GradientReducer::startReady() {
  while (nextBucket_ < buckets_.size() && buckets_[nextBucket_].ready == buckets_[nextBucket_].params.size()) {
    buckets_[nextBucket_].pending = communicator_->allreduceAsync(buckets_[nextBucket_].flat);
    ++nextBucket_;
  }
}

void GradientReducer::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  collecting_ = false;
  for (size_t i = nextBucket_; i < buckets_.size(); ++i) {
    Bucket& b = buckets_[i];
    for (size_t j = 0; j < b.params.size(); ++j) {
      if (!received_[b.params[j]]) b.flat.narrow(0, b.offsets[j], params_[b.params[j]].numel()).zero_();
    }
    b.ready = b.params.size();
  }
  startReady();
  const double world = static_cast<double>(communicator_->worldSize());
  c10::NoGradGuard noGrad;
  for (Bucket& b : buckets_) {
    communicator_->wait(b.pending, "the gradient allreduce");
    b.flat.div_(world);
    for (size_t j = 0; j < b.params.size(); ++j) {
      at::Tensor& p = params_[b.params[j]];
      at::Tensor& grad = p.mutable_grad();
      if (!grad.defined()) grad = at::zeros_like(p);
      grad.copy_(b.flat.narrow(0, b.offsets[j], p.numel()).view(p.sizes()));
    }
  }
}

}  // namespace pirl::distributed
