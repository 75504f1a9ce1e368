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
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& [name, p] = params_[i];
    const at::Tensor& grad = p.grad();
    if (!grad.defined()) continue;
    at::Tensor d = decay_[i] && options_.weightDecay > 0 ? grad.add(p, options_.weightDecay) : grad.clone();
    auto it = buffers_.find(name);
    if (it == buffers_.end()) {
      it = buffers_.emplace(name, d).first;
    } else {
      it->second.mul_(options_.momentum).add_(d);
    }
    p.sub_(it->second, lr);
  }
}

void Sgd::zeroGrad() {
  for (auto& [name, p] : params_) {
    if (p.grad().defined()) p.mutable_grad().zero_();
  }
}

double Sgd::gradSquaredNorm() const {
  double total = 0;
  for (const auto& [name, p] : params_) {
    if (p.grad().defined()) total += p.grad().pow(2).sum().item<double>();
  }
  return total;
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
    restored.emplace(name, it->second.to(p.device(), p.scalar_type()).clone());
  }
  for (const auto& [name, buffer] : buffers) {
    TORCH_CHECK_VALUE(restored.count(name), "momentum buffer '", name, "' names no parameter");
  }
  buffers_ = std::move(restored);
}

}  // namespace pirl::train
