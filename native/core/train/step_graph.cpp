#include "step_graph.h"

#include <c10/util/Exception.h>

#include <algorithm>

#ifdef PIRL_WITH_CUDA
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <map>
#include <mutex>
#endif

#include "../error_message.h"

namespace pirl::train {

bool CaptureBudget::allow(int64_t step) {
  recent_.erase(std::remove_if(recent_.begin(), recent_.end(), [&](int64_t s) { return step - s >= kWindow; }), recent_.end());
  if (static_cast<int>(recent_.size()) >= kMaxCaptures) return false;
  recent_.push_back(step);
  return true;
}

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

// Graphs whose capture failed, kept until exit: the allocators (the pinned host one too, in the libtorch versions
// whose capture routes it) may still hold callbacks into them after the trainer that made them is gone.
void keepFailed(std::unique_ptr<at::cuda::CUDAGraph> graph) {
  static auto* failed = new std::vector<std::unique_ptr<at::cuda::CUDAGraph>>();  // never freed: see above
  static std::mutex mutex;
  const std::lock_guard<std::mutex> lock(mutex);
  failed->push_back(std::move(graph));
}

// `waiting` waits for `done` when the scope ends, an exception too: the caller's stream then frees nothing that
// work queued on `done` (a warm-up that ran out of memory half-way) still reads.
struct JoinStreams {
  const at::cuda::CUDAStream& waiting;
  const at::cuda::CUDAStream& done;
  ~JoinStreams() {
    try {
      waitFor(waiting, done);
    } catch (...) {  // a failing device: the error that unwinds is the one to report
    }
  }
};

// Captures, and the warm-ups before them, one at a time in the process: the allocator's emptyCache before
// a capture may not run while another is under way, and each device's capture stream serves one at a time.
std::mutex& captureMutex() {
  static std::mutex mutex;
  return mutex;
}

// A stream of its own per device, not one from c10's pool: the pool hands its streams out in turn (the
// loader's side stream among them), and another thread's work on the stream would join the capture.
at::cuda::CUDAStream captureStream(c10::DeviceIndex device) {
  static std::map<c10::DeviceIndex, cudaStream_t> streams;  // lives as long as the process, as the pool's do
  auto it = streams.find(device);
  if (it == streams.end()) {
    const c10::cuda::CUDAGuard onDevice(device);
    cudaStream_t stream = nullptr;
    C10_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    it = streams.emplace(device, stream).first;
  }
  return at::cuda::getStreamFromExternal(it->second, device);
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
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  std::vector<at::Tensor> inputs, outputs;
  std::vector<int64_t> key;
  bool disabled = false;  // a capture failed, or one too many: the run goes on without graphs
  CaptureBudget budget;
  int64_t runs = 0;

  explicit Impl(c10::Device d) : device(d) {}

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
  replayed_ = false;
  const int64_t run = g.runs++;
  if (g.disabled) return body(inputs);
  const c10::cuda::CUDAGuard onDevice(g.device);
  const at::cuda::CUDAStream current = at::cuda::getCurrentCUDAStream(g.device.index());
  if (g.graph && withShapes(key(), inputs) == g.key) {
    for (size_t i = 0; i < inputs.size(); ++i) g.inputs[i].copy_(inputs[i], /*non_blocking=*/true);
    g.graph->replay();
    replayed_ = true;
    return g.outputs;
  }
  g.forget();
  if (!g.budget.allow(run)) {
    g.disabled = true;
    TORCH_WARN("pirl: the training step's inputs keep changing shape (or settings), each change a new CUDA graph capture ",
               "(more than ", CaptureBudget::kMaxCaptures, " within ", CaptureBudget::kWindow, " steps), so this run goes on ",
               "without CUDA graphs (as with cudaGraphs: false). The likely cause: batches shrunk by unreadable images, read ",
               "without a decode cache; a cache (pirl train --cache, ImageFolder's cache option) leaves them out of the data ",
               "set, so that every batch is full.");
    return body(inputs);
  }
  const std::lock_guard<std::mutex> oneCapture(captureMutex());
  const at::cuda::CUDAStream stream = captureStream(g.device.index());
  // This step eagerly, on the stream the capture will use: what runs once per stream and thread (cuBLAS
  // workspaces, cuDNN handles and its autotuning) is done before the capture, which may not do it.
  waitFor(stream, current);
  std::vector<at::Tensor> out;
  {
    const JoinStreams join{current, stream};
    const c10::cuda::CUDAStreamGuard onStream(stream);
    out = body(inputs);
  }
  for (const at::Tensor& t : out) {
    if (t.defined()) t.record_stream(current);  // made on the capture stream, read on the caller's
  }
  // The capture records kernels without running them: the graph starts from what this step left.
  for (const at::Tensor& t : inputs) g.inputs.push_back(at::empty_like(t));
  g.key = withShapes(key(), inputs);
  c10::cuda::device_synchronize();
  c10::cuda::CUDACachingAllocator::emptyCache();  // the warm-up's freed blocks, for the graph's pool
  auto graph = std::make_unique<at::cuda::CUDAGraph>();
  const auto pool = at::cuda::graph_pool_handle();
  try {
    const c10::cuda::CUDAStreamGuard onStream(stream);
    const AutocastCacheOff noCache;
    // Thread-local: the loader's threads keep copying and allocating while this thread captures.
    graph->capture_begin(pool, cudaStreamCaptureModeThreadLocal);
    try {
      g.outputs = body(g.inputs);
    } catch (...) {
      g.outputs.clear();
      throw;
    }
    graph->capture_end();
  } catch (const std::exception& e) {
    // Ends what the failed capture left: the stream's capture (else this thread's next allocation or host read
    // fails: "operation not permitted when stream is capturing"), the allocator's routing into its pool (which
    // capture_end skips when the capture was invalid, before libtorch 2.12), then the pool itself. Ended here
    // rather than by capture_end, which refuses unless the current stream is the capture's (the guard above is gone).
    {
      const c10::cuda::CUDAStreamGuard onStream(stream);
      cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
      if (cudaStreamIsCapturing(stream, &status) == cudaSuccess && status != cudaStreamCaptureStatusNone) {
        cudaGraph_t partial = nullptr;
        if (cudaStreamEndCapture(stream, &partial) == cudaSuccess && partial != nullptr) cudaGraphDestroy(partial);
      }
      (void)cudaGetLastError();  // the failed capture's error, not a later call's
    }
    try {
      c10::cuda::CUDACachingAllocator::endAllocateToPool(g.device.index(), pool);
    } catch (...) {
    }
    try {
      c10::cuda::CUDACachingAllocator::releasePool(g.device.index(), pool);
    } catch (...) {
    }
    keepFailed(std::move(graph));
    g.forget();
    g.disabled = true;
    TORCH_WARN("pirl: capturing the training step as a CUDA graph failed, so this run goes on without CUDA graphs ",
               "(as with cudaGraphs: false); please report it with this message: ", messageOf(e));
    return out;  // this step's work was done by the warm-up
  }
  g.graph = std::move(graph);
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
