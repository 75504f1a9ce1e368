// Everything a PIRL training run changes, and one training step over it (docs/PIRL.md).
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <utility>

#include "../distributed/communicator.h"
#include "../distributed/gradient_reducer.h"
#include "../memory_bank.h"
#include "../model/pirl_model.h"
#include "../pirl_loss.h"
#include "precision.h"
#include "sgd.h"
#include "step_graph.h"

namespace pirl::train {

struct StepResult {
  double loss;
  double lossImage;
  double lossJigsaw;
  double gradNorm;
  bool applied;   // false: fp16 gradients overflowed, the step was skipped and the loss scale halved
  bool stop;      // some rank asked to stop (alone: this process did): every rank stops after this step
  bool replayed;  // the device work was a replay of the captured CUDA graph (StepOptions::cudaGraphs)
};

// How a step computes: the SGD options, the precision of the trunk and heads, the seed of the
// negatives' streams (each sample's negatives at step s come from a stream of (seed, s, its bank row)),
// and whether a CUDA model's forward, loss and backward are captured once as a CUDA graph and replayed.
struct StepOptions {
  SgdOptions sgd;
  Precision precision;
  uint64_t seed;
  bool cudaGraphs;
};

// torch.cuda.amp.GradScaler's defaults.
constexpr double kInitialLossScale = 65536.0;
constexpr int64_t kLossScaleGrowthInterval = 2000;

class TrainState {
 public:
  TrainState(model::PirlModel model, std::shared_ptr<MemoryBank> bank, const PirlLossOptions& loss,
             const StepOptions& options);
  // Before the trainer goes while its model stays (dispose): the model's BatchNorm layers stop summing across
  // the ranks (a later forward in training mode would wait on a group that is gone).
  void releaseModel();

  // Forward both passes (under autocast unless fp32), the PIRL loss in fp32 against the pre-update
  // bank, backward; then, only if every gradient is finite, the SGD step and the bank update. A
  // non-finite loss or gradient throws and changes neither the weights nor the bank — except in
  // fp16, where overflowing gradients skip the step and lower the loss scale. The batch may be on
  // any device: it moves to the model's. The device is read once per step, for all the step's numbers.
  // With cudaGraphs the forward, loss and backward are replayed from a graph captured at the first step of
  // these shapes (and again whenever what it baked in changes: NCE's Z, a tensor's address; the fp16 loss
  // scale is an input); the negatives are drawn and SGD and the bank update run outside it, as without.
  // `stopRequested`: this process wants to end the run; in a data-parallel run the ranks agree on it in
  // this step, so that all stop after the same step.
  StepResult step(const at::Tensor& images, const at::Tensor& patches, const at::Tensor& indices, double lr,
                  bool stopRequested = false);

  // Makes this state one replica of a data-parallel run (docs/distributed.md): rank 0's weights,
  // buffers and bank now, then each step gradients averaged in buckets during backward, the reported
  // losses and Z estimates averaged, and every replica of the bank updated with all ranks' (indices, f).
  // BatchNorm: with `syncBatchNorm` statistics over all ranks' batches (the run is then the one-process
  // run of the global batch, to rounding), otherwise each rank's own, with the buffers from rank 0 each
  // step. Negatives are drawn per sample (StepOptions::seed), so every rank draws what one process would.
  // Not with cudaGraphs (the gradients' all-reduce runs from autograd hooks on the host).
  void distribute(std::shared_ptr<distributed::Communicator> communicator, bool syncBatchNorm);
  bool distributed() const { return communicator_ != nullptr; }
  // bankInit 'features' in a data-parallel run: each rank embeds its shard of the data set, rows [begin, end)
  // (contiguous shares in rank order; alone, every row), into its replica of the bank; then shareBankShards
  // sends each shard from its rank to every replica.
  std::pair<int64_t, int64_t> bankShard() const;
  void shareBankShards();
  // Whether any rank asks to stop (`stop`: this one's ask), heard by every rank at once between steps (an epoch's
  // end, where rank 0's kNN pass may have been cut short by the stop); alone, `stop`. A step's own vote rides in it.
  bool agreeToStop(bool stop);
  // Steps taken: the position of the negatives' streams (restored on resume).
  int64_t steps() const { return steps_; }
  void setSteps(int64_t steps);

  model::PirlModel& model() { return model_; }
  MemoryBank& bank() { return *bank_; }
  PirlLoss& loss() { return loss_; }
  Sgd& sgd() { return sgd_; }
  LossScaler& scaler() { return scaler_; }

 private:
  // The step's device work over its inputs (images, patches, bank rows, the negatives of both terms; in fp16 the
  // loss scale, 0-dim): gradients in the parameters, and {f, the mean losses (and Z's estimates), the squared
  // gradient norm, whether BatchNorm's running statistics overflowed (1) or not (0)}.
  std::vector<at::Tensor> computeGradients(const std::vector<at::Tensor>& inputs);
  // computeGradients's `out` reduced over the ranks and read to the host: {f, the doubles [means (n), stop votes,
  // ranks whose BatchNorm statistics overflowed, each rank's batch size (one per rank), squared gradient norm]}.
  std::vector<at::Tensor> computeStats(const std::vector<at::Tensor>& out, int64_t batch, bool stopRequested);
  // What a captured step depends on besides its inputs: see StepGraph::Key.
  std::vector<int64_t> graphKey();
  // What a failed step says of its cause: weights already non-finite, a batch of NaN or of values far outside
  // normalised images, or the lr and the largest weight.
  std::string describeCause(const at::Tensor& images, const at::Tensor& patches, double lr) const;
  // The model's buffers a forward pass in training moves: BatchNorm's running statistics (floating point), or its
  // step counts (int64).
  std::vector<at::Tensor> runningBuffers(bool statistics) const;
  // What a step changes before it is known to be taken, as it was: BatchNorm's buffers, flat (one copy each of the
  // statistics, ResNet-50's 200 KB, and of the counts), and Z (the first step's estimate sets it).
  struct Before {
    at::Tensor statistics, counts;
    double zImage, zJigsaw;
  };
  Before snapshot() const;
  // Puts it back after a step that is not taken: its batch had moved them (a batch that made the statistics NaN
  // made every later evaluation NaN; a NaN first estimate of Z, every later loss).
  void putBack(const Before& before);

  model::PirlModel model_;
  std::shared_ptr<MemoryBank> bank_;
  PirlLoss loss_;
  Sgd sgd_;
  Precision precision_;
  uint64_t seed_;
  LossScaler scaler_{kInitialLossScale, kLossScaleGrowthInterval};
  std::shared_ptr<distributed::Communicator> communicator_;
  std::unique_ptr<distributed::GradientReducer> reducer_;
  bool syncBatchNorm_ = false;
  int64_t steps_ = 0;
  std::unique_ptr<StepGraph> graph_;
};

}  // namespace pirl::train
