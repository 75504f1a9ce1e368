// PIRL's memory bank (docs/PIRL.md, "Memory bank"): one unit row m_y per training image, updated
// by momentum after each step, and the seeded source of the negatives drawn from it.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "index_check.h"

namespace pirl {

// Where a draw of negatives comes from: the bank's generator (keys undefined), or one stream per sample
// of (seed, its key) (negatives/negative_streams.h, drawn on the bank's device): what a sample draws then
// depends on which sample it is, not on its place in the batch, so the ranks of a data-parallel step
// draw what one process given their whole batch would.
struct NegativeStreams {
  uint64_t seed = 0;
  at::Tensor keys;  // B int64, any device: the batch's bank rows
};

// What a restore's errors call its two tensors: the caller's names for them (a checkpoint's "bank.rows").
struct BankStateNames {
  std::string rows = "rows";
  std::string generator = "generatorState";
};

class MemoryBank {
 public:
  // N×D rows, uniform(±1/sqrt(D/3)) then L2-normalised; `seed` drives initialisation and sampling.
  MemoryBank(int64_t size, int64_t dim, uint64_t seed, at::Device device = at::kCPU);
  // A bank restored from a checkpoint: its rows (finite; float32, or float64 for numerical checks) and the
  // state of its sampling generator.
  MemoryBank(at::Tensor rows, const at::Tensor& generatorState, const BankStateNames& names = {});

  int64_t size() const { return rows_.size(0); }
  int64_t dim() const { return rows_.size(1); }
  const at::Tensor& rows() const { return rows_; }

  // Rows at `indices` (a copy); out-of-range indices → c10::IndexError.
  at::Tensor get(const at::Tensor& indices) const;

  // 1-D int64 rows in [0, size()), or c10::TypeError / c10::ValueError / c10::IndexError naming `name`.
  // Cheap on the host; on a GPU it reads the device.
  void checkIndices(const at::Tensor& indices, const char* name) const;

  // m_y ← normalize(μ·m_y + (1−μ)·f̂_y). An index repeated in the batch is updated once, with the
  // mean of its f̂ rows, so the order of the batch changes it only by float rounding. IndexCheck::Check
  // also refuses non-finite f̂; Trusted checks neither, and reads nothing off the device.
  void update(const at::Tensor& indices, const at::Tensor& fHat, double momentum, IndexCheck check);

  // B×K rows drawn uniformly with replacement; with `excludePositives` (B rows) sample b never draws
  // its own positive (uniform over the other N−1 rows).
  at::Tensor sampleNegatives(int64_t batch, int64_t k, const at::Tensor& excludePositives = at::Tensor(),
                             const NegativeStreams& streams = NegativeStreams());
  // K rows shared by the whole batch (from keyed streams: the stream of `streams.seed` alone).
  at::Tensor sampleShared(int64_t k, const NegativeStreams& streams = NegativeStreams());

  at::Tensor generatorState() const;

  // `t` (draws, stream keys, a step's indices) on the rows' device; from the host to a GPU without waiting for it.
  at::Tensor onDevice(const at::Tensor& t) const;

  // Held by native work on the bank from the JavaScript call that queues it until its Promise settles. Steps (Kind::Step)
  // queue behind each other on their model's thread, in call order. Calls on the shared workers run in no set order:
  // one that changes the bank or its generator (Kind::Write: update, a draw, a PirlLoss.compute) is refused while any
  // other work holds it; one that only reads rows (Kind::Read: get, nceLoss) while a step or a write does; a step
  // while a read or a write does (they ran between each other's reads: other rows, silently).
  class Use {
   public:
    enum class Kind { Step, Read, Write };
    // std::logic_error naming `call` when the bank is held by work this one may not overlap.
    Use(std::shared_ptr<MemoryBank> bank, Kind kind, const std::string& call);
    ~Use();
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;

   private:
    std::shared_ptr<MemoryBank> bank_;
    Kind kind_;
  };
  // std::logic_error naming `call` (a quick read, as state()) while a step or a write holds the bank.
  void refuseWhileChanging(const std::string& call) const;

 private:
  std::atomic<int> held_[3] = {0, 0, 0};  // Uses by Kind
  at::Tensor rows_;
  at::Generator generator_;
  mutable std::mutex mutex_;  // sampling and updates may come from several worker threads
};

}  // namespace pirl
