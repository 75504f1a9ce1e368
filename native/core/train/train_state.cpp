#include "train_state.h"

#include <c10/util/Exception.h>

#include <cmath>

namespace pirl::train {

namespace {

// Weight decay applies to convolution and linear weights only, not to BatchNorm and biases.
Sgd makeSgd(model::PirlModel& model, const SgdOptions& options) {
  std::vector<std::pair<std::string, at::Tensor>> params;
  std::vector<bool> decay;
  for (const auto& item : model->named_parameters()) {
    params.emplace_back(item.key(), item.value());
    decay.push_back(item.value().dim() > 1);
  }
  return Sgd(std::move(params), std::move(decay), options);
}

}  // namespace

TrainState::TrainState(model::PirlModel model, std::shared_ptr<MemoryBank> bank, const PirlLossOptions& loss,
                       const SgdOptions& sgd)
    : model_(std::move(model)), bank_(std::move(bank)), loss_(loss), sgd_(makeSgd(model_, sgd)) {
  TORCH_CHECK_VALUE(bank_->dim() == model_->options().embeddingDim, "the bank's rows (", bank_->dim(),
                    ") must be as wide as the embeddings (", model_->options().embeddingDim, ")");
}

StepResult TrainState::step(const at::Tensor& images, const at::Tensor& patches, const at::Tensor& indices, double lr) {
  TORCH_CHECK_VALUE(std::isfinite(lr) && lr >= 0, "lr must be a finite number >= 0, got ", lr);
  // The model owns the device: the bank must live there, and the batch (indices too) moves there.
  const c10::Device device = model_->device();
  TORCH_CHECK_VALUE(bank_->rows().device() == device, "the memory bank is on ", bank_->rows().device(),
                    " but the model on ", device, ": create both on one device");
  const at::Tensor rows = indices.to(device);
  model_->train();
  sgd_.zeroGrad();
  const auto e = model_->forward(images.to(device), patches.to(device));
  const PirlLossResult r = loss_(*bank_, e.f, e.g, rows, /*updateBank=*/false);
  r.loss.backward();
  const double norm = std::sqrt(sgd_.gradSquaredNorm());
  const double loss = r.loss.item<double>();
  if (!std::isfinite(norm) || !std::isfinite(loss)) {
    TORCH_CHECK(false, "non-finite ", std::isfinite(loss) ? "gradient" : "loss", " (loss ", loss, ", gradient norm ",
                norm, "): training stopped; the weights and the memory bank were not changed by this step");
  }
  sgd_.step(lr);
  bank_->update(rows, e.f.detach(), loss_.options().momentum);
  return {loss, r.lossImage.item<double>(), r.lossJigsaw.item<double>(), norm};
}

}  // namespace pirl::train
