#include "train_state.h"

#include <c10/util/Exception.h>

#include <cmath>

#include "../splitmix.h"

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
      precision_(options.precision),
      seed_(options.seed) {
  TORCH_CHECK_VALUE(bank_->dim() == model_->options().embeddingDim, "the bank's rows (", bank_->dim(),
                    ") must be as wide as the embeddings (", model_->options().embeddingDim, ")");
  // An EMA of Z is read with the step's other numbers, not on its own.
  loss_.leaveZUpdatesToCaller();
  // cuDNN picks each convolution's fastest algorithm for the step's fixed shapes once, then reuses it.
  if (model_->device().is_cuda()) at::globalContext().setBenchmarkCuDNN(true);
}

void TrainState::distribute(std::shared_ptr<distributed::Communicator> communicator, bool syncBatchNorm) {
  TORCH_CHECK_VALUE(communicator != nullptr, "distribute needs a communicator");
  communicator_ = std::move(communicator);
  syncBatchNorm_ = syncBatchNorm;
  if (syncBatchNorm) {
    model_->trunk->sumBatchNormAcrossRanks([c = communicator_](at::Tensor& t) {
      at::Tensor there = t.to(c->device());
      c->allreduce(there, "the allreduce of BatchNorm's statistics");
      if (!there.is_same(t)) t.copy_(there);
    });
  }
  std::vector<at::Tensor> params, state;
  for (const auto& p : model_->parameters()) params.push_back(p);
  state = params;
  for (const auto& b : model_->buffers()) state.push_back(b);
  state.push_back(bank_->rows());
  communicator_->broadcast(state, "the broadcast of rank 0's weights, buffers and memory bank");
  reducer_ = std::make_unique<distributed::GradientReducer>(params, communicator_);
  loss_.setZEstimateReduction([c = communicator_](double z) {
    at::Tensor t = at::full({1}, z, at::TensorOptions(at::kDouble).device(c->device()));
    c->allreduce(t, "the allreduce of Z's estimate");
    return t.item<double>() / static_cast<double>(c->worldSize());
  });
}

void TrainState::setSteps(int64_t steps) {
  TORCH_CHECK_VALUE(steps >= 0, "steps must be >= 0, got ", steps);
  steps_ = steps;
}

StepResult TrainState::step(const at::Tensor& images, const at::Tensor& patches, const at::Tensor& indices, double lr,
                            bool stopRequested) {
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
  if (communicator_) {
    if (!syncBatchNorm_) {
      // Each rank's batch moved its own running statistics: rank 0's stand for all.
      std::vector<at::Tensor> buffers;
      for (const auto& b : model_->buffers()) buffers.push_back(b);
      communicator_->broadcast(buffers, "the broadcast of rank 0's BatchNorm buffers");
    }
    reducer_->prepare();
  }
  const NegativeStreams streams{splitmix64(splitmix64(seed_) ^ static_cast<uint64_t>(steps_)), rows};
  ++steps_;
  model::Embeddings e;
  {
    AutocastScope autocast(device.type(), precision_);
    e = model_->forward(images.to(device, /*non_blocking=*/true), patches.to(device, /*non_blocking=*/true));
  }
  // The loss computes in the bank's dtype (fp32; fp64 for numerical checks) whatever the trunk computed in.
  const at::Tensor f = e.f.to(bank_->rows().scalar_type()), g = e.g.to(bank_->rows().scalar_type());
  const PirlLossResult r = loss_(*bank_, f, g, rows, IndexCheck::Trusted, /*updateBank=*/false, streams);
  const bool scaled = precision_ == Precision::Fp16;
  const double scale = scaled ? scaler_.scale() : 1.0;
  (scaled ? r.loss * scale : r.loss).backward();
  if (reducer_) reducer_->finish();
  // Read together, once: the losses and (an EMA of Z) this batch's estimates of Z, averaged over ranks; the
  // stop votes, summed; the gradient norm (the same on every rank after the reduction).
  std::vector<at::Tensor> averaged{r.loss.detach().to(at::kDouble).reshape(1), r.lossImage.to(at::kDouble).reshape(1),
                                   r.lossJigsaw.to(at::kDouble).reshape(1)};
  if (r.zEstimates.defined()) averaged.push_back(r.zEstimates);
  const at::Tensor means = at::cat(averaged);
  const int64_t n = means.numel();
  at::Tensor shared = at::cat({means, at::full({1}, stopRequested ? 1.0 : 0.0, at::TensorOptions(at::kDouble).device(device))});
  if (communicator_) {
    shared = shared.to(communicator_->device());
    communicator_->allreduce(shared, "the allreduce of the losses");
    shared = at::cat({shared.narrow(0, 0, n) / static_cast<double>(communicator_->worldSize()), shared.narrow(0, n, 1)}).to(device);
  }
  // The one host read of the step: every number it reports and decides on, together.
  const at::Tensor stats = at::cat({shared, sgd_.gradSquaredNorm().to(device).to(at::kDouble).reshape(1)}).cpu();
  const double* s = stats.data_ptr<double>();
  const bool stop = s[n] > 0;
  const double loss = s[0], norm = std::sqrt(s[n + 1]) / scale;
  const bool finite = std::isfinite(loss) && std::isfinite(norm);
  if (scaled && std::isfinite(loss) && !scaler_.update(finite)) return {loss, s[1], s[2], norm, false, stop};
  if (!finite) {
    TORCH_CHECK(false, "non-finite ", std::isfinite(loss) ? "gradient" : "loss", " (loss ", loss, ", gradient norm ",
                norm, "): training stopped; the weights and the memory bank were not changed by this step");
  }
  // Z follows the batches whose steps are taken.
  if (r.zEstimates.defined()) loss_.updateZ(s[3], s[4]);
  if (scaled) sgd_.scaleGradients(1.0 / scale);
  sgd_.step(lr);
  at::Tensor updateRows = rows, updateF = f.detach();
  if (communicator_) {
    // Every replica applies every rank's update (the ranks' shards are disjoint, so no row twice).
    const c10::Device there = communicator_->device();
    const auto all = communicator_->allGather({rows.to(there), updateF.to(there)},
                                              "the all-gather of the batch's rows and embeddings");
    updateRows = all[0].to(device);
    updateF = all[1].to(device);
  }
  // Trusted: every rank checked its rows against the same bank, and a finite mean loss means every f is finite.
  bank_->update(updateRows, updateF, loss_.options().momentum, IndexCheck::Trusted);
  return {loss, s[1], s[2], norm, true, stop};
}

}  // namespace pirl::train
