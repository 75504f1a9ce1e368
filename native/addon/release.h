// Large CPU tensors that JavaScript handles let go of (a finalizer, dispose()) are freed on a thread of their own:
// freeing one unmaps its pages, which held the JS thread ~50 ms per batch of the paper preset at B=256.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <cstdint>

#include "owner_thread.h"

namespace pirl::addon {

// Smaller storage comes from glibc's heap, and freeing it is cheap.
constexpr int64_t kReleaseOffThreadBytes = int64_t{1} << 20;
// Beyond this much waiting to be freed, a tensor is freed in place: a loop that drops tensors faster than the
// thread frees them would otherwise pile them up.
constexpr int64_t kMaxPendingReleaseBytes = int64_t{1} << 30;

// Drops `tensor` (the handle's reference; its storage is freed if that was the last).
inline void releaseTensor(at::Tensor&& tensor) {
  static auto* thread = new OwnerThread(1);  // never freed: used until exit
  static std::atomic<int64_t> pending{0};
  at::Tensor dropped = std::move(tensor);
  if (!dropped.defined() || !dropped.device().is_cpu() || !dropped.has_storage()) return;
  const auto bytes = static_cast<int64_t>(dropped.storage().nbytes());
  if (bytes < kReleaseOffThreadBytes || pending.load() + bytes > kMaxPendingReleaseBytes) return;
  pending += bytes;
  thread->post([dropped = std::move(dropped), bytes]() mutable {
    dropped.reset();
    pending -= bytes;
  });
}

}  // namespace pirl::addon
