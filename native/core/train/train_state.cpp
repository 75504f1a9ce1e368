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
                       const StepOptions& options)
    : model_(std::move(model)), bank_(std::move(bank)), loss_(loss), sgd_(makeSgd(model_, options.sgd)),
      precision_(options.precision) {
  TORCH_CHECK_VALUE(bank_->dim() == model_->options().embeddingDim, "the bank's rows (", bank_->dim(),
                    ") must be as wide as the embeddings (", model_->options().embeddingDim, ")");
  // cuDNN picks each convolution's fastest algorithm for the step's fixed shapes once, then reuses it.
  if (model_->device().is_cuda()) at::globalContext().setBenchmarkCuDNN(true);
}

StepResult TrainState::step(const at::Tensor& images, const at::Tensor& patches, const at::Tensor& indices, double lr) {
  TORCH_CHECK_VALUE(std::isfinite(lr) && lr >= 0, "lr must be a finite number >= 0, got ", lr);
  // The model owns the device: the bank must live there, and the batch (indices too) moves there.
  const c10::Device device = model_->device();
  TORCH_CHECK_VALUE(bank_->rows().device() == device, "the memory bank is on ", bank_->rows().device(),
                    " but the model on ", device, ": create both on one device");
  // Checked where they come from (the host, for the loader's batches), then trusted on the device.
  bank_->checkIndices(indices, "indices");
  const at::Tensor rows = indices.to(device, /*non_blocking=*/true);
  model_->train();
  sgd_.zeroGrad();
  model::Embeddings e;
  {
    AutocastScope autocast(device.type(), precision_);
    e = model_->forward(images.to(device, /*non_blocking=*/true), patches.to(device, /*non_blocking=*/true));
  }
  // The loss and the bank stay fp32 whatever the trunk computed in.
  const at::Tensor f = e.f.to(at::kFloat), g = e.g.to(at::kFloat);
  const PirlLossResult r = loss_(*bank_, f, g, rows, IndexCheck::Trusted, /*updateBank=*/false);
  const bool scaled = precision_ == Precision::Fp16;
  const double scale = scaled ? scaler_.scale() : 1.0;
  (scaled ? r.loss * scale : r.loss).backward();
  // The one host read of the step: every number it reports and decides on, together.
  const at::Tensor stats = at::stack({r.loss.detach().to(at::kDouble), r.lossImage.to(at::kDouble),
                                      r.lossJigsaw.to(at::kDouble), sgd_.gradSquaredNorm().to(device)})
                               .cpu();
  const double* s = stats.data_ptr<double>();
  const double loss = s[0], norm = std::sqrt(s[3]) / scale;
  const bool finite = std::isfinite(loss) && std::isfinite(norm);
  if (scaled && std::isfinite(loss) && !scaler_.update(finite)) return {loss, s[1], s[2], norm, false};
  if (!finite) {
    TORCH_CHECK(false, "non-finite ", std::isfinite(loss) ? "gradient" : "loss", " (loss ", loss, ", gradient norm ",
                norm, "): training stopped; the weights and the memory bank were not changed by this step");
  }
  if (scaled) sgd_.scaleGradients(1.0 / scale);
  sgd_.step(lr);
  bank_->update(rows, f.detach(), loss_.options().momentum, IndexCheck::Trusted);
  return {loss, s[1], s[2], norm, true};
}

}  // namespace pirl::train
