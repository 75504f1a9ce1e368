#include "side_stream_copy.h"

#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <c10/util/Exception.h>

#include <map>
#include <mutex>
#include <utility>

namespace pirl::data {

namespace {

// One side stream per device, taken from the pool once: the caching allocator keeps a freed block for the
// stream it was allocated on, so a pool stream per copy would hold a batch's memory on each of them.
c10::Stream sideStream(const c10::impl::VirtualGuardImpl& impl, c10::Device device) {
  static std::mutex mutex;
  static std::map<std::pair<c10::DeviceType, c10::DeviceIndex>, c10::Stream> streams;
  const c10::Device target = device.has_index() ? device : impl.getDevice();
  const std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(target.type(), target.index());
  auto it = streams.find(key);
  if (it == streams.end()) it = streams.emplace(key, impl.getStreamFromGlobalPool(target)).first;
  return it->second;
}

}  // namespace

std::vector<at::Tensor> copyOnSideStream(const std::vector<at::Tensor>& host, c10::Device device) {
  if (device.is_cpu()) return host;
  // c10's device-generic stream API: the same code for any device with streams, no CUDA headers.
  const c10::impl::VirtualGuardImpl impl(device.type());
  const c10::Stream side = sideStream(impl, device);
  std::vector<at::Tensor> out;
  {
    const c10::StreamGuard onSide(side);  // allocations and copies below belong to the side stream
    for (const at::Tensor& t : host) out.push_back(t.to(side.device(), /*non_blocking=*/true));
  }
  side.synchronize();
  const c10::Stream compute = impl.getDefaultStream(side.device());
  for (const at::Tensor& t : out) t.record_stream(compute);
  return out;
}

}  // namespace pirl::data
