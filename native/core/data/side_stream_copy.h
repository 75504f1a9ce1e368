// Batches reach a GPU on a side stream, so that their copy overlaps the step the device is computing
// (the copy engines run beside the kernels) instead of queueing behind it on the compute stream.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace pirl::data {

// `host` (pinned, for the copies to be asynchronous) copied to `device` on its side stream (one per device).
// Returns once the copies are done — blocking this thread, not the device — so the tensors can be used
// by any later work; their memory is marked as used by the device's default stream (pirl's compute
// stream), so that it is not handed out again before the work queued there has read it. On the CPU:
// `host` itself.
std::vector<at::Tensor> copyOnSideStream(const std::vector<at::Tensor>& host, c10::Device device);

}  // namespace pirl::data
