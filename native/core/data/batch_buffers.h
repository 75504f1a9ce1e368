// Memory for the CPU batches one Loader makes, kept for its next batches when a batch is freed: a fresh
// batch (20 MB at the paper preset's B=32, 270 MB at B=256) otherwise takes a page fault on every page
// at its first write: a third of the Loader's time, by a profile, on a 2-core virtual machine.
#pragma once

#include <ATen/ATen.h>

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace pirl::data {

class BatchBuffers : public std::enable_shared_from_this<BatchBuffers> {
 public:
  // Keeps at most `keep` freed buffers of each size (the batches in flight, the consumer's and one being freed).
  static std::shared_ptr<BatchBuffers> create(size_t keep);
  ~BatchBuffers();
  BatchBuffers(const BatchBuffers&) = delete;
  BatchBuffers& operator=(const BatchBuffers&) = delete;

  // An uninitialised CPU tensor whose memory is a kept buffer of its size if there is one, and is given
  // back when the tensor is freed (after this pool's owner, too: the tensor keeps the pool alive).
  at::Tensor empty(at::IntArrayRef sizes, at::ScalarType dtype);

  // Frees every kept buffer (a Loader idle after an epoch: its memory goes back until the next).
  void trim();

  size_t keptBuffers();  // for tests

 private:
  explicit BatchBuffers(size_t keep) : keep_(keep) {}
  void giveBack(void* data, size_t bytes);

  const size_t keep_;
  std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_;
};

}  // namespace pirl::data
