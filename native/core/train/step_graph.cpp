#include "step_graph.h"

#include <c10/util/Exception.h>

#ifdef PIRL_WITH_CUDA
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace pirl::train {

#ifdef PIRL_WITH_CUDA

namespace {

// The inputs' shapes, strides and dtypes: a capture holds for these only.
std::vector<int64_t> withShapes(std::vector<int64_t> key, const std::vector<at::Tensor>& inputs) {
  for (const at::Tensor& t : inputs) {
    key.push_back(t.dim());
    key.insert(key.end(), t.sizes().begin(), t.sizes().end());
    key.insert(key.end(), t.strides().begin(), t.strides().end());
    key.push_back(static_cast<int64_t>(t.scalar_type()));
  }
  return key;
}

// `waiting` runs its later work after what `done` has queued so far.
void waitFor(const at::cuda::CUDAStream& waiting, const at::cuda::CUDAStream& done) {
  at::cuda::CUDAEvent event;
  event.record(done);
  event.block(waiting);
}

// Autocast's cache of cast weights would hand tensors made during a capture to later eager work.
class AutocastCacheOff {
 public:
  AutocastCacheOff() : was_(at::autocast::is_autocast_cache_enabled()) { at::autocast::set_autocast_cache_enabled(false); }
  ~AutocastCacheOff() { at::autocast::set_autocast_cache_enabled(was_); }

 private:
  bool was_;
};

}  // namespace

struct StepGraph::Impl {
  c10::Device device;
  at::cuda::CUDAStream stream;  // captures (and the warm-up before each) run here; replays on the caller's
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  std::vector<at::Tensor> inputs, outputs;
  std::vector<int64_t> key;

  explicit Impl(c10::Device d) : device(d), stream(at::cuda::getStreamFromPool(false, d.index())) {}

  void forget() {
    outputs.clear();  // the graph's memory pool goes with the last tensor in it
    graph.reset();
    inputs.clear();
    key.clear();
  }
};

StepGraph::StepGraph(c10::Device device) {
  TORCH_CHECK_VALUE(device.is_cuda(), "CUDA graphs need a CUDA device, got ", device);
  const c10::Device d = device.has_index() ? device : c10::Device(c10::kCUDA, c10::cuda::current_device());
  impl_ = std::make_unique<Impl>(d);
}

StepGraph::~StepGraph() = default;

std::vector<at::Tensor> StepGraph::run(const std::vector<at::Tensor>& inputs, const Key& key, const Body& body) {
  Impl& g = *impl_;
  const c10::cuda::CUDAGuard onDevice(g.device);
  const at::cuda::CUDAStream current = at::cuda::getCurrentCUDAStream(g.device.index());
  if (g.graph && withShapes(key(), inputs) == g.key) {
    for (size_t i = 0; i < inputs.size(); ++i) g.inputs[i].copy_(inputs[i], /*non_blocking=*/true);
    g.graph->replay();
    replayed_ = true;
    return g.outputs;
  }
  replayed_ = false;
  g.forget();
  // This step eagerly, on the stream the capture will use: what runs once per stream and thread (cuBLAS
  // workspaces, cuDNN handles and its autotuning) is done before the capture, which may not do it.
  waitFor(g.stream, current);
  std::vector<at::Tensor> out;
  {
    const c10::cuda::CUDAStreamGuard onStream(g.stream);
    out = body(inputs);
  }
  waitFor(current, g.stream);
  for (const at::Tensor& t : out) {
    if (t.defined()) t.record_stream(current);  // made on the capture stream, read on the caller's
  }
  // The capture records kernels without running them: the graph starts from what this step left.
  for (const at::Tensor& t : inputs) g.inputs.push_back(at::empty_like(t));
  g.key = withShapes(key(), inputs);
  c10::cuda::device_synchronize();
  c10::cuda::CUDACachingAllocator::emptyCache();  // the warm-up's freed blocks, for the graph's pool
  g.graph = std::make_unique<at::cuda::CUDAGraph>();
  try {
    const c10::cuda::CUDAStreamGuard onStream(g.stream);
    const AutocastCacheOff noCache;
    // Thread-local: the loader's threads keep copying and allocating while this thread captures.
    g.graph->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
    try {
      g.outputs = body(g.inputs);
    } catch (const std::exception&) {
      try {
        g.graph->capture_end();  // ends the stream's capture, so that the stream stays usable
      } catch (const std::exception&) {
      }
      throw;
    }
    g.graph->capture_end();
  } catch (const std::exception& e) {
    g.forget();
    TORCH_CHECK(false, "capturing the training step as a CUDA graph failed (", e.what(),
                "): train without it (cudaGraphs: false); this step changed neither the weights nor the memory bank");
  }
  ++captures_;
  return out;
}

#else

struct StepGraph::Impl {};

StepGraph::StepGraph(c10::Device device) {
  TORCH_CHECK_VALUE(false, "CUDA graphs need a CUDA build of pirl (a CUDA libtorch); this one has none (device ", device, ")");
}

StepGraph::~StepGraph() = default;

std::vector<at::Tensor> StepGraph::run(const std::vector<at::Tensor>&, const Key&, const Body&) {
  TORCH_CHECK(false, "CUDA graphs need a CUDA build of pirl");
  return {};
}

#endif

}  // namespace pirl::train
