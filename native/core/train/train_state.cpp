#include "train_state.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "../runtime.h"
#include "../splitmix.h"

namespace pirl::train {

namespace {

// A number as JavaScript writes it (iostream writes "-nan"): the error reaches JavaScript.
std::string asJs(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  return c10::str(v);
}

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

// Rank r of n holds rows [r·size/n, (r+1)·size/n): shares that differ by at most one row.
std::pair<int64_t, int64_t> shardOf(int64_t rank, int64_t ranks, int64_t size) {
  return {rank * size / ranks, (rank + 1) * size / ranks};
}

}  // namespace

TrainState::TrainState(model::PirlModel model, std::shared_ptr<MemoryBank> bank, const PirlLossOptions& loss,
                       const StepOptions& options)
    : model_(std::move(model)), bank_(std::move(bank)), loss_(loss), sgd_(makeSgd(model_, options.sgd)),
      precision_(options.precision),
      seed_(options.seed) {
  TORCH_CHECK_VALUE(bank_->dim() == model_->options().embeddingDim, "the bank's rows (", bank_->dim(),
                    ") must be as wide as the embeddings (", model_->options().embeddingDim, ")");
  // cuDNN picks each convolution's fastest algorithm for the step's fixed shapes once, then reuses it (by timing: not
  // in a deterministic process).
  if (model_->device().is_cuda() && !deterministic()) at::globalContext().setBenchmarkCuDNN(true);
  if (options.cudaGraphs) {
    TORCH_CHECK_VALUE(!(loss.mode == nce::Mode::Nce && loss.zMode == ZMode::Ema),
                      "cudaGraphs needs a Z that stays put: NCE with Z frozen, or InfoNCE (an EMA of Z changes the "
                      "captured step every step)");
    TORCH_CHECK_VALUE(model_->device().is_cuda(), "cudaGraphs needs a model on a CUDA device, got ", model_->device());
    graph_ = std::make_unique<StepGraph>(model_->device());
  }
}

void TrainState::releaseModel() {
  if (syncBatchNorm_) model_->trunk->sumBatchNormAcrossRanks({});
}

void TrainState::distribute(std::shared_ptr<distributed::Communicator> communicator, bool syncBatchNorm) {
  TORCH_CHECK_VALUE(communicator != nullptr, "distribute needs a communicator");
  TORCH_CHECK_VALUE(graph_ == nullptr, "data-parallel training runs without cudaGraphs (its all-reduce is driven from the host)");
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

std::pair<int64_t, int64_t> TrainState::bankShard() const {
  if (!communicator_) return {0, bank_->size()};
  return shardOf(communicator_->rank(), communicator_->worldSize(), bank_->size());
}

void TrainState::shareBankShards() {
  if (!communicator_) return;
  const at::Tensor& rows = bank_->rows();
  for (int64_t r = 0; r < communicator_->worldSize(); ++r) {
    const auto [begin, end] = shardOf(r, communicator_->worldSize(), bank_->size());
    if (end == begin) continue;  // fewer rows than ranks: every rank skips the same shards
    at::Tensor shard = rows.narrow(0, begin, end - begin);
    at::Tensor there = shard.to(communicator_->device());
    communicator_->broadcast({there}, "the exchange of the memory bank's shards embedded by each rank", r);
    if (!there.is_same(shard)) shard.copy_(there);
  }
}

bool TrainState::agreeToStop(bool stop) {
  if (!communicator_) return stop;
  at::Tensor votes = at::full({1}, stop ? 1.0 : 0.0, at::TensorOptions(at::kDouble).device(communicator_->device()));
  communicator_->allreduce(votes, "the vote on a stop");
  return votes.cpu().item<double>() > 0;
}

void TrainState::setSteps(int64_t steps) {
  TORCH_CHECK_VALUE(steps >= 0, "steps must be >= 0, got ", steps);
  steps_ = steps;
}

std::vector<at::Tensor> TrainState::computeGradients(const std::vector<at::Tensor>& in) {
  sgd_.zeroGrad();
  if (reducer_) reducer_->prepare();
  model::Embeddings e;
  {
    AutocastScope autocast(model_->device().type(), precision_);
    e = model_->forward(in[0], in[1]);
  }
  // The loss computes in the bank's dtype (fp32; fp64 for numerical checks) whatever the trunk computed in.
  const at::Tensor f = e.f.to(bank_->rows().scalar_type()), g = e.g.to(bank_->rows().scalar_type());
  const PirlLossResult r = loss_(*bank_, f, g, in[2], PirlNegatives{in[3], in[4]}, /*updateBank=*/false);
  (precision_ == Precision::Fp16 ? r.loss * in[5] : r.loss).backward();
  if (reducer_) reducer_->finish();
  std::vector<at::Tensor> means{r.loss.detach().to(at::kDouble).reshape(1), r.lossImage.to(at::kDouble).reshape(1),
                                r.lossJigsaw.to(at::kDouble).reshape(1)};
  if (r.zEstimates.defined()) means.push_back(r.zEstimates);
  const at::Tensor statisticsOverflowed = model_->statisticsFinite().logical_not().to(at::kDouble).reshape(1);
  return {f.detach(), at::cat(means), sgd_.gradSquaredNorm().to(f.device()).to(at::kDouble).reshape(1), statisticsOverflowed};
}

std::vector<at::Tensor> TrainState::computeStats(const std::vector<at::Tensor>& out, int64_t batch, bool stopRequested) {
  const int64_t n = out[1].numel();
  const c10::Device device = out[1].device();
  // Read together, once: the losses and (an EMA of Z) this batch's estimates of Z, averaged over ranks; the
  // stop votes and the ranks whose BatchNorm statistics overflowed, summed; each rank's batch size, in its own slot
  // (what the bank update's all-gather takes from each); the gradient norm (the same on every rank after the reduction).
  const at::TensorOptions doubles = at::TensorOptions(at::kDouble).device(device);
  at::Tensor shared = at::cat({out[1], at::full({1}, stopRequested ? 1.0 : 0.0, doubles), out[3]});
  if (communicator_) {
    const int64_t ranks = communicator_->worldSize();
    at::Tensor sizes = at::zeros({ranks}, doubles);
    sizes.narrow(0, communicator_->rank(), 1).fill_(static_cast<double>(batch));
    shared = at::cat({shared, sizes}).to(communicator_->device());
    communicator_->allreduce(shared, "the allreduce of the losses");
    shared = at::cat({shared.narrow(0, 0, n) / static_cast<double>(ranks), shared.narrow(0, n, 2 + ranks)}).to(device);
  }
  // The one host read of the step: every number it reports and decides on, together.
  return {out[0], at::cat({shared, out[2]}).cpu()};
}

std::vector<int64_t> TrainState::graphKey() {
  std::vector<int64_t> key;
  const auto address = [&](const at::Tensor& t) {
    key.push_back(t.defined() ? reinterpret_cast<int64_t>(t.data_ptr()) : 0);
  };
  for (const at::Tensor& p : model_->parameters()) {
    address(p);
    address(p.grad());
  }
  for (const at::Tensor& b : model_->buffers()) address(b);
  address(bank_->rows());
  key.push_back(bank_->size());
  for (const double v : {loss_.zImage(), loss_.zJigsaw()}) {
    int64_t bits = 0;
    std::memcpy(&bits, &v, sizeof bits);
    key.push_back(bits);
  }
  // Read on the host as kernels are chosen, so frozen into a capture: setTf32 between steps changed eager steps only.
  const Tf32 maths = tf32();
  const at::Context& context = at::globalContext();
  for (const bool flag : {maths.convolutions, maths.matmul, context.userEnabledCuDNN(), context.deterministicCuDNN(),
                          context.benchmarkCuDNN(), context.deterministicAlgorithms()}) {
    key.push_back(flag ? 1 : 0);
  }
  return key;
}

// What a failed step says of its cause, read only when failing (the loss alone shows none): weights already
// non-finite; else a batch holding NaN or infinity, or values far outside normalised images (BatchNorm hides them
// from the loss); else this step's lr and the largest weight (past 10^4: the updates blew the weights up).
std::string TrainState::describeCause(const at::Tensor& images, const at::Tensor& patches, double lr) const {
  model::WeightExtremes w;
  const char* broken = nullptr;  // the views holding NaN or infinity, first of them sample `brokenSample`
  int64_t brokenSample = 0;
  double largest = 0;
  try {
    w = model_->weightExtremes(/*statistics=*/false);  // this step's pass has just moved them
    for (const auto& [views, name] : {std::pair<const at::Tensor&, const char*>{images, "images"}, {patches, "patches"}}) {
      const at::Tensor bad = at::isfinite(views).logical_not().flatten(1).any(1);
      if (!broken && bad.any().item<bool>()) {
        broken = name;
        brokenSample = bad.to(at::kByte).argmax().item<int64_t>();
      }
      largest = std::max(largest, views.abs().max().item<double>());
    }
  } catch (const c10::Error&) {
    return "";  // the step's own error matters more than this detail of it (a device out of memory by now)
  }
  if (!w.firstNonFinite.empty()) {
    return c10::str(". The weights were already non-finite (", w.firstNonFinite,
                    " first): the step before overflowed them; lower the lr (this step's: ", asJs(lr), ")");
  }
  const char* whose = communicator_ ? "This rank's" : "The batch's";
  if (broken) return c10::str(". ", whose, " ", broken, " hold NaN or infinity (sample ", brokenSample, " first): the data is broken, not the run");
  if (largest > model::kOverflowing) {
    return c10::str(". ", whose, " values reach ", asJs(largest), ": the model takes normalised images (per channel mean 0 and "
                    "standard deviation 1, as the Loader's are)");
  }
  return c10::str(". This step's lr: ", asJs(lr), "; the largest weight: ", asJs(w.largestValue), " (", w.largest, ")",
                  w.largestValue > model::kOverflowing ? ": the updates diverged; lower the lr" : "");
}

std::vector<at::Tensor> TrainState::runningBuffers(bool statistics) const {
  std::vector<at::Tensor> buffers;
  for (const at::Tensor& b : model_->buffers()) {
    if (b.is_floating_point() == statistics) buffers.push_back(b);
  }
  return buffers;
}

namespace {

at::Tensor flatCopy(const std::vector<at::Tensor>& buffers) {
  std::vector<at::Tensor> flat;
  for (const at::Tensor& b : buffers) flat.push_back(b.reshape(-1));
  return flat.empty() ? at::Tensor() : at::cat(flat);
}

void copyBack(const std::vector<at::Tensor>& buffers, const at::Tensor& saved) {
  int64_t offset = 0;
  for (const at::Tensor& b : buffers) {
    b.copy_(saved.narrow(0, offset, b.numel()).view_as(b));
    offset += b.numel();
  }
}

}  // namespace

TrainState::Before TrainState::snapshot() const {
  return {flatCopy(runningBuffers(true)), flatCopy(runningBuffers(false)), loss_.zImage(), loss_.zJigsaw()};
}

void TrainState::putBack(const Before& before) {
  copyBack(runningBuffers(true), before.statistics);
  copyBack(runningBuffers(false), before.counts);
  loss_.setZ(before.zImage, before.zJigsaw);
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
  const at::Tensor rows = bank_->onDevice(indices);  // pinned first: a pageable copy may wait for the stream
  model_->train();
  if (communicator_ && !syncBatchNorm_) {
    // Each rank's batch moved its own running statistics: rank 0's stand for all. Only they travel (one message):
    // BatchNorm's step counts (int64) advance alike on every replica, from rank 0's at the start.
    std::vector<at::Tensor> running = runningBuffers(true);
    communicator_->broadcast(running, "the broadcast of rank 0's BatchNorm buffers");
  }
  const Before before = snapshot();
  // Counted as the step returns: one that throws is drawn again, with the same negatives, by the next call.
  const NegativeStreams streams{splitmix64(splitmix64(seed_) ^ static_cast<uint64_t>(steps_)), rows};
  const PirlNegatives negatives = loss_.drawNegatives(*bank_, rows, streams);
  const bool scaled = precision_ == Precision::Fp16;
  const double scale = scaled ? scaler_.scale() : 1.0;
  std::vector<at::Tensor> inputs{images.to(device, /*non_blocking=*/true), patches.to(device, /*non_blocking=*/true),
                                 rows, negatives.jigsaw, negatives.image};
  // An input, not a number baked into a capture: the scale's every halving and doubling would recapture.
  if (scaled) inputs.push_back(at::full({}, scale, bank_->rows().options()));
  const auto body = [&](const std::vector<at::Tensor>& in) { return computeGradients(in); };
  // NCE's first step reads its estimate of Z off the device: no capture can hold that.
  const bool zKnown = loss_.options().mode != nce::Mode::Nce || (loss_.zImage() > 0 && loss_.zJigsaw() > 0);
  const bool graphed = graph_ && zKnown;
  if (graphed) {
    // A capture zeroes the gradients and adds into them: its warm-up must find them too (not create them).
    for (const at::Tensor& p : model_->parameters()) {
      if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    }
  }
  const int64_t ranks = communicator_ ? communicator_->worldSize() : 0;
  const std::vector<at::Tensor> out = [&] {
    // A step that throws before its update (out of memory, a collective's timeout) is not taken either: what its
    // forward set goes back.
    try {
      return computeStats(graphed ? graph_->run(inputs, [&] { return graphKey(); }, body) : body(inputs), rows.size(0), stopRequested);
    } catch (...) {
      try {
        putBack(before);
      } catch (...) {  // the device's own failure: the step's error is the one to tell
      }
      throw;
    }
  }();
  const bool replayed = graphed && graph_->replayed();
  const at::Tensor& f = out[0];
  const at::Tensor& stats = out[1];
  const int64_t n = stats.numel() - 3 - ranks;
  const double* s = stats.data_ptr<double>();
  const bool stop = s[n] > 0;
  const double overflowed = s[n + 1];  // ranks whose BatchNorm statistics did
  const double loss = s[0], norm = std::sqrt(s[n + 2 + ranks]) / scale;
  const bool finite = std::isfinite(loss) && std::isfinite(norm);
  if (scaled && std::isfinite(loss) && !finite) {  // fp16's overflow: skipped, the scale halved
    scaler_.update(false);
    putBack(before);
    ++steps_;
    return {loss, s[1], s[2], norm, false, stop, replayed};
  }
  if (!finite) {
    putBack(before);
    TORCH_CHECK(false, "non-finite ", std::isfinite(loss) ? "gradient" : "loss", " (loss ", asJs(loss), ", gradient norm ",
                asJs(norm), "): training stopped; the weights, BatchNorm's statistics and the memory bank were not changed by this step",
                describeCause(images, patches, lr));
  }
  if (overflowed > 0) {
    putBack(before);
    TORCH_CHECK(false, "BatchNorm's running statistics overflowed float32 in this step's forward",
                ranks > 0 ? c10::str(" (on ", asJs(overflowed), " of the ", ranks, " ranks)") : std::string(),
                ", though its loss (", asJs(loss), ") and gradients were finite: training stopped; the weights, BatchNorm's "
                "statistics and the memory bank were not changed by this step", describeCause(images, patches, lr));
  }
  if (scaled) scaler_.update(true);  // counted only once the step is taken: a refused one changes nothing
  // Z follows the batches whose steps are taken.
  if (n > 3) loss_.updateZ(s[3], s[4]);
  if (scaled) sgd_.scaleGradients(1.0 / scale);
  // From here a throw (the all-gather's, the bank update's) leaves the step half taken: its collective failed, and the run with it.
  sgd_.step(lr);
  at::Tensor updateRows = rows, updateF = f;
  if (communicator_) {
    // Every replica applies every rank's update (the ranks' shards are disjoint, so no row twice).
    const c10::Device there = communicator_->device();
    const std::vector<int64_t> sizes(s + n + 2, s + n + 2 + ranks);
    const auto all = communicator_->allGather({rows.to(there), updateF.to(there)},
                                              "the all-gather of the batch's rows and embeddings", sizes);
    updateRows = all[0].to(device);
    updateF = all[1].to(device);
  }
  // Trusted: every rank checked its rows against the same bank, and a finite mean loss means every f is finite.
  bank_->update(updateRows, updateF, loss_.options().momentum, IndexCheck::Trusted);
  ++steps_;
  return {loss, s[1], s[2], norm, true, stop, replayed};
}

}  // namespace pirl::train
