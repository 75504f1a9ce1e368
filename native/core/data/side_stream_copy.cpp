#include "side_stream_copy.h"

#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <c10/util/Exception.h>

namespace pirl::data {

std::vector<at::Tensor> copyOnSideStream(const std::vector<at::Tensor>& host, c10::Device device) {
  if (device.is_cpu()) return host;
  // c10's device-generic stream API: the same code for any device with streams, no CUDA headers.
  const c10::impl::VirtualGuardImpl impl(device.type());
  const c10::Stream side = impl.getStreamFromGlobalPool(device);
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
