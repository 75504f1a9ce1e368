// A training step's device work (forward, loss, backward, the step's numbers) captured once as a CUDA
// graph and replayed: one launch instead of the ~10³ kernel launches a ResNet step makes, which bound a
// small model's step on a fast GPU by the CPU (the "cudaGraphs" option; README, "On a GPU").
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace pirl::train {

// Whether another capture is worth it. A step whose inputs keep changing shape (a batch shrunk by an unreadable image,
// without a decode cache) recaptures at every change — a warm-up step, a device sync and a capture each: beyond
// kMaxCaptures captures within kWindow steps, graphs cost more than they save and the run goes on without them.
class CaptureBudget {
 public:
  static constexpr int kMaxCaptures = 3;
  static constexpr int64_t kWindow = 50;

  // Counts a capture at run `step` (runs numbered from 0); false where it would be one too many.
  bool allow(int64_t step);

 private:
  std::vector<int64_t> recent_;  // the steps of the captures within the window
};

class StepGraph {
 public:
  using Body = std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>& inputs)>;
  // What the captured work depends on beyond its inputs' shapes (the addresses of the tensors it
  // reads and writes, the host numbers baked into its kernels): a change means a new capture.
  using Key = std::function<std::vector<int64_t>()>;

  // On a CUDA device; throws where this build has no CUDA.
  explicit StepGraph(c10::Device device);
  ~StepGraph();

  // `body`'s outputs over `inputs` (tensors on the device). While the key and the inputs' shapes stay as
  // captured: the inputs copied into the graph's own, one replay, and the graph's outputs (overwritten
  // by the next replay). Otherwise `body` runs as it is — this step's work, and the warm-up a capture
  // needs (cuDNN's autotuning, handles and tensors made on first use) — and is then captured for the
  // next steps. `body` must read the device only through its inputs and the key's tensors. A capture that
  // fails (an operation a graph cannot hold), or one past the CaptureBudget, warns once and leaves this graph
  // running `body` as it is.
  std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs, const Key& key, const Body& body);

  bool replayed() const { return replayed_; }  // whether the last run replayed

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  bool replayed_ = false;
};

}  // namespace pirl::train
