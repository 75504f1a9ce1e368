// Process-wide runtime settings of the pirl core: intra-op threads and what libtorch is running on.
#pragma once

#include <cstdint>
#include <string>

namespace pirl {

// More intra-op threads than this only thrash (10,000 were seen to stall a step forever).
constexpr int kMaxThreads = 256;
// `n` as a thread count: in [1, kMaxThreads], else std::out_of_range naming it `name`.
int checkThreads(int64_t n, const char* name = "numThreads");

// Sets the intra-op thread count used by every pirl computation, in every thread that runs one, OpenBLAS's
// matrix products too: n in [1, kMaxThreads], std::out_of_range otherwise.
void setNumThreads(int n);
// setNumThreads(n) unless a count was set already in this process: false then. The defaults are the process's,
// applied once: a Worker thread that loads pirl leaves the count another thread set as it is. OpenBLAS's count is
// left to OPENBLAS_NUM_THREADS or GOTO_NUM_THREADS where the environment sets one.
bool setDefaultNumThreads(int n);
int numThreads();

// OpenMP keeps the thread count per calling thread: call this first in any worker thread
// (e.g. libuv's pool) so it honours setNumThreads; cheap when nothing changed.
void applyThreadSettings();

// TF32 (a 10-bit mantissa) for float32 convolutions (cuDNN) and matrix products (cuBLAS) on Ampere and
// later GPUs. libtorch's defaults are PyTorch's: convolutions yes, matrix products no. Process-wide.
struct Tf32 {
  bool convolutions;
  bool matmul;
};
void setTf32(Tf32 tf32);
Tf32 tf32();

// Deterministic kernels, process-wide (torch.use_deterministic_algorithms and cudnn.deterministic): on, cuDNN's
// benchmark mode is off and an op without a deterministic implementation throws; off again, benchmark mode is as it
// was before (a trainer on a GPU turns it on as it is made). The CPU's kernels are deterministic either way.
void setDeterministic(bool on);
bool deterministic();
// `message`, and where it is libtorch's refusal of cuBLAS in deterministic mode though CUBLAS_WORKSPACE_CONFIG was set
// when setDeterministic(true) ran, why: libtorch read the variable once, at this process's first cuBLAS product, before.
std::string explainCublasConfig(const std::string& message);

enum class BlasKind { OpenBLAS, MKL, Reference, Other, None };
const char* blasKindName(BlasKind kind);

struct BlasInfo {
  BlasKind kind = BlasKind::None;
  std::string library;  // resolved path of the loaded BLAS, empty when linked statically (MKL wheels)
};

// The BLAS actually loaded in this process, not the one libtorch was configured with.
BlasInfo detectBlas();

struct BuildInfo {
  std::string libtorchVersion;  // compile-time version of the headers
  std::string libtorchLibrary;  // path of the libtorch_cpu loaded at run time
  bool cudaCompiled = false;    // pirl's CUDA kernels are in this build
  bool cudaAvailable = false;   // a CUDA device is usable now
  int cudaDeviceCount = 0;
  bool gloo = false;            // data-parallel training on the CPU (c10d's Gloo)
  bool nccl = false;            // data-parallel training on GPUs (c10d's NCCL)
  bool cxx11Abi = false;
  BlasInfo blas;
  int numThreads = 0;
  int numInteropThreads = 0;
  std::string parallelBackend;
};

BuildInfo buildInfo();

}  // namespace pirl
