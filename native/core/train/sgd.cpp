#include "sgd.h"

#include <c10/util/Exception.h>
#include <c10/core/GradMode.h>

namespace pirl::train {

Sgd::Sgd(std::vector<std::pair<std::string, at::Tensor>> params, std::vector<bool> decay, const SgdOptions& options)
    : params_(std::move(params)), decay_(std::move(decay)), options_(options) {
  TORCH_CHECK_VALUE(params_.size() == decay_.size(), "one decay flag per parameter");
  TORCH_CHECK_VALUE(options.momentum >= 0 && options.momentum < 1, "momentum must be in [0, 1), got ", options.momentum);
  TORCH_CHECK_VALUE(options.weightDecay >= 0, "weightDecay must be >= 0, got ", options.weightDecay);
}

void Sgd::step(double lr) {
  c10::NoGradGuard noGrad;
  // d = grad + wd·p for the decayed parameters, the gradient itself for the others.
  std::vector<at::Tensor> decayedParams, decayedGrads;
  std::vector<size_t> decayed, withGrad;
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& grad = params_[i].second.grad();
    if (!grad.defined()) continue;
    withGrad.push_back(i);
    if (decay_[i] && options_.weightDecay > 0) {
      decayed.push_back(i);
      decayedParams.push_back(params_[i].second);
      decayedGrads.push_back(grad);
    }
  }
  std::vector<at::Tensor> d(params_.size());
  for (size_t i : withGrad) d[i] = params_[i].second.grad();
  if (!decayed.empty()) {
    std::vector<at::Tensor> sums = at::_foreach_add(decayedGrads, decayedParams, options_.weightDecay);
    for (size_t j = 0; j < decayed.size(); ++j) d[decayed[j]] = std::move(sums[j]);
  }
  std::vector<at::Tensor> params, buffers, updates;
  for (size_t i : withGrad) {
    const auto& [name, p] = params_[i];
    auto it = buffers_.find(name);
    if (it == buffers_.end()) {
      buffers_.emplace(name, d[i].is_same(p.grad()) ? d[i].clone() : d[i]);  // never alias the gradient
    } else {
      buffers.push_back(it->second);
      updates.push_back(d[i]);
    }
  }
  if (!buffers.empty()) {
    at::_foreach_mul_(buffers, options_.momentum);
    at::_foreach_add_(buffers, updates);
  }
  buffers.clear();
  for (size_t i : withGrad) {
    params.push_back(params_[i].second);
    buffers.push_back(buffers_.at(params_[i].first));
  }
  if (!params.empty()) at::_foreach_add_(params, buffers, -lr);
}

void Sgd::zeroGrad() {
  std::vector<at::Tensor> grads = gradients();
  if (!grads.empty()) at::_foreach_zero_(grads);
}

std::vector<at::Tensor> Sgd::gradients() const {
  std::vector<at::Tensor> grads;
  for (const auto& [name, p] : params_) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  return grads;
}

at::Tensor Sgd::gradSquaredNorm() const {
  const std::vector<at::Tensor> grads = gradients();
  if (grads.empty()) return at::zeros({}, at::kDouble);
  return at::stack(at::_foreach_norm(grads)).to(at::kDouble).pow(2).sum();
}

void Sgd::scaleGradients(double factor) {
  c10::NoGradGuard noGrad;
  std::vector<at::Tensor> grads = gradients();
  if (!grads.empty()) at::_foreach_mul_(grads, factor);
}

void Sgd::setMomentumBuffers(const std::map<std::string, at::Tensor>& buffers) {
  std::map<std::string, at::Tensor> restored;
  for (const auto& [name, p] : params_) {
    const auto it = buffers.find(name);
    // Every step gives every parameter a buffer: a partial set is a damaged checkpoint, not a fresh start.
    TORCH_CHECK_VALUE(it != buffers.end() || buffers.empty(), "momentum buffers must cover every parameter: '", name,
                      "' is missing");
    if (it == buffers.end()) continue;
    TORCH_CHECK_VALUE(it->second.sizes() == p.sizes(), "momentum buffer '", name, "' must have shape ", p.sizes(),
                      ", got ", it->second.sizes());
    // As the weights: a NaN here would be in every weight it touches after the first step.
    TORCH_CHECK_VALUE(at::isfinite(it->second).all().item<bool>(), "momentum buffer '", name,
                      "' must be finite, got a NaN or infinite value");
    // In the parameter's memory format (a checkpoint's buffers are contiguous): _foreach updates take their
    // fast path only where a parameter and its buffer are laid out alike.
    restored.emplace(name, at::empty_like(p).copy_(it->second));
  }
  for (const auto& [name, buffer] : buffers) {
    TORCH_CHECK_VALUE(restored.count(name), "momentum buffer '", name, "' names no parameter");
  }
  buffers_ = std::move(restored);
}

}  // namespace pirl::train
