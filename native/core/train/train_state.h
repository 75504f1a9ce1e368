// Everything a PIRL training run changes, and one training step over it (docs/PIRL.md).
#pragma once

#include <ATen/ATen.h>

#include <memory>

#include "../memory_bank.h"
#include "../model/pirl_model.h"
#include "../pirl_loss.h"
#include "sgd.h"

namespace pirl::train {

struct StepResult {
  double loss;
  double lossImage;
  double lossJigsaw;
  double gradNorm;
};

class TrainState {
 public:
  TrainState(model::PirlModel model, std::shared_ptr<MemoryBank> bank, const PirlLossOptions& loss,
             const SgdOptions& sgd);

  // Forward both passes, the PIRL loss against the pre-update bank, backward; then, only if every
  // gradient is finite, the SGD step and the bank update. A non-finite gradient throws and changes
  // neither the weights nor the bank. The batch may be on any device: it moves to the model's.
  StepResult step(const at::Tensor& images, const at::Tensor& patches, const at::Tensor& indices, double lr);

  model::PirlModel& model() { return model_; }
  MemoryBank& bank() { return *bank_; }
  PirlLoss& loss() { return loss_; }
  Sgd& sgd() { return sgd_; }

 private:
  model::PirlModel model_;
  std::shared_ptr<MemoryBank> bank_;
  PirlLoss loss_;
  Sgd sgd_;
};

}  // namespace pirl::train
