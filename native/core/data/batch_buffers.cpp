#include "batch_buffers.h"

#include <c10/util/accumulate.h>

#include <cstdlib>
#include <new>

namespace pirl::data {

namespace {

// 64-byte aligned, as libtorch's CPU allocator aligns (its alloc_cpu is not in libtorch 1.13's headers).
void* allocate(size_t bytes) {
  void* data = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + (bytes == 0 ? 64 : 0));
  if (data == nullptr) throw std::bad_alloc();
  return data;
}

}  // namespace

std::shared_ptr<BatchBuffers> BatchBuffers::create(size_t keep) { return std::shared_ptr<BatchBuffers>(new BatchBuffers(keep)); }

BatchBuffers::~BatchBuffers() { trim(); }

at::Tensor BatchBuffers::empty(at::IntArrayRef sizes, at::ScalarType dtype) {
  const size_t bytes = static_cast<size_t>(c10::multiply_integers(sizes)) * at::elementSize(dtype);
  void* data = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto kept = free_.find(bytes);
    if (kept != free_.end() && !kept->second.empty()) {
      data = kept->second.back();
      kept->second.pop_back();
    }
  }
  if (data == nullptr) data = allocate(bytes);
  return at::from_blob(
      data, sizes, [self = shared_from_this(), bytes](void* d) { self->giveBack(d, bytes); }, at::TensorOptions().dtype(dtype));
}

void BatchBuffers::giveBack(void* data, size_t bytes) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto& kept = free_[bytes];
    if (kept.size() < keep_) return kept.push_back(data);
  }
  std::free(data);
}

void BatchBuffers::trim() {
  std::map<size_t, std::vector<void*>> kept;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    kept.swap(free_);
  }
  for (auto& [bytes, buffers] : kept) {
    for (void* data : buffers) std::free(data);
  }
}

size_t BatchBuffers::keptBuffers() {
  std::lock_guard<std::mutex> lock(mutex_);
  size_t n = 0;
  for (const auto& [bytes, buffers] : free_) n += buffers.size();
  return n;
}

}  // namespace pirl::data
