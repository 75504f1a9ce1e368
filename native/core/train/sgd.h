// SGD with momentum and weight decay, as torch.optim.SGD computes it, over all parameters at once with
// multi-tensor (_foreach) kernels, and the momentum buffers kept by parameter name so that a
// checkpoint restores them exactly.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

namespace pirl::train {

struct SgdOptions {
  double momentum;
  double weightDecay;  // not on BatchNorm parameters and biases (docs/PIRL.md, "Optimisation")
};

class Sgd {
 public:
  // `params`: named parameters; `decay[i]` says whether parameter i gets weight decay.
  Sgd(std::vector<std::pair<std::string, at::Tensor>> params, std::vector<bool> decay, const SgdOptions& options);

  // p ← p − lr·buf, buf ← momentum·buf + (grad + wd·p) (buf = grad + wd·p on the first step).
  void step(double lr);
  void zeroGrad();

  // Σ‖grad‖² as a 0-dim tensor where the gradients are (no host read): its square root is the
  // gradient norm; non-finite when any gradient is.
  at::Tensor gradSquaredNorm() const;
  // Multiplies every gradient by `factor` (unscaling a scaled loss's gradients).
  void scaleGradients(double factor);

  const std::map<std::string, at::Tensor>& momentumBuffers() const { return buffers_; }
  // None (before the first step) or one per parameter, of its shape; c10::ValueError otherwise.
  void setMomentumBuffers(const std::map<std::string, at::Tensor>& buffers);

 private:
  std::vector<at::Tensor> gradients() const;

  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<bool> decay_;
  SgdOptions options_;
  std::map<std::string, at::Tensor> buffers_;
};

}  // namespace pirl::train
