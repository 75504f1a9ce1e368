#include "runtime.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <dlfcn.h>
#include <link.h>
#include <torch/version.h>

#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

#include "distributed/communicator.h"

namespace pirl {

namespace {
std::atomic<int> desiredThreads{0};
std::atomic<int> settingsGeneration{0};
thread_local int appliedGeneration = -1;

std::string realPath(const char* p) {
  char buf[PATH_MAX];
  return ::realpath(p, buf) ? std::string(buf) : std::string(p);
}

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

// OpenBLAS's pthreads build runs a matrix product on threads of its own, as many as the cores unless told, whatever
// OpenMP's count (at::set_num_threads leaves them, PyTorch's too): setNumThreads(1) still took every core for a
// product, and each of N ranks on a host all of them. Its own setter, found once the BLAS loaded is known to be
// OpenBLAS's pthreads build (its OpenMP build follows OpenMP's count, and frees buffers a product in flight may use
// when told another).
void setBlasThreads(int n) {
  using SetThreads = void (*)(int);
  static std::atomic<SetThreads> found{nullptr};
  static std::atomic<bool> none{false};  // the BLAS loaded is known, and is not OpenBLAS's pthreads build
  SetThreads set = found.load();
  if (set == nullptr) {
    if (none) return;
    const BlasInfo blas = detectBlas();
    void* library = blas.kind == BlasKind::OpenBLAS ? dlopen(blas.library.c_str(), RTLD_LAZY | RTLD_NOLOAD) : nullptr;
    const auto parallel = library ? reinterpret_cast<int (*)()>(dlsym(library, "openblas_get_parallel")) : nullptr;
    constexpr int kPthreads = 1;  // openblas_get_parallel(): 0 single-threaded, 1 pthreads, 2 OpenMP
    set = parallel && parallel() == kPthreads ? reinterpret_cast<SetThreads>(dlsym(library, "openblas_set_num_threads")) : nullptr;
    if (set == nullptr) {
      none = blas.kind != BlasKind::None;  // MKL (it follows OpenMP's count) or another; none loaded yet: looked for next time
      return;
    }
    found = set;
  }
  set(n);
}

// OpenBLAS's own variables, set by a user (or a cluster's environment): a default leaves its count to them.
bool blasCountGiven() {
  for (const char* name : {"OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS"}) {
    const char* v = std::getenv(name);
    if (v != nullptr && *v != '\0') return true;
  }
  return false;
}

void setThreads(int n, bool blas) {
  ++settingsGeneration;
  applyThreadSettings();
  if (blas) setBlasThreads(n);
}
}  // namespace

int checkThreads(int64_t n, const char* name) {
  if (n < 1 || n > kMaxThreads) {
    throw std::out_of_range(std::string(name) + " must be an integer in [1, " + std::to_string(kMaxThreads) + "], got " +
                            std::to_string(n));
  }
  return static_cast<int>(n);
}

void setNumThreads(int n) {
  checkThreads(n);
  desiredThreads = n;
  setThreads(n, /*blas=*/true);
}

bool setDefaultNumThreads(int n) {
  checkThreads(n);
  int unset = 0;
  if (!desiredThreads.compare_exchange_strong(unset, n)) return false;
  setThreads(n, !blasCountGiven());
  return true;
}

int numThreads() {
  applyThreadSettings();
  return at::get_num_threads();
}

void applyThreadSettings() {
  const int generation = settingsGeneration.load();
  if (appliedGeneration == generation) return;
  appliedGeneration = generation;
  if (desiredThreads > 0) at::set_num_threads(desiredThreads);
}

void setTf32(Tf32 tf32) {
  at::globalContext().setAllowTF32CuDNN(tf32.convolutions);
  at::globalContext().setAllowTF32CuBLAS(tf32.matmul);
}

Tf32 tf32() { return {at::globalContext().allowTF32CuDNN(), at::globalContext().allowTF32CuBLAS()}; }

namespace {
// CUBLAS_WORKSPACE_CONFIG as setDeterministic(true) last found it ("": unset), read on the caller's thread (the
// environment's writer): an error explained on another only reads this.
std::mutex cublasConfigMutex;
std::string cublasConfigWhenDeterministic;
}  // namespace

std::string explainCublasConfig(const std::string& message) {
  if (message.find("CUBLAS_WORKSPACE_CONFIG") == std::string::npos) return message;
  std::string set;
  {
    const std::lock_guard<std::mutex> lock(cublasConfigMutex);
    set = cublasConfigWhenDeterministic;
  }
  if (set.empty()) return message;
  return message + " (CUBLAS_WORKSPACE_CONFIG is " + set + ", but it was set after this process first used cuBLAS, which reads it "
         "once: turn deterministic mode on before any GPU work, or start the process with CUBLAS_WORKSPACE_CONFIG=" + set + ")";
}

void setDeterministic(bool on) {
  static bool benchmarkBefore = false;  // cuDNN's benchmark mode as it was when the process turned deterministic
  if (on) {
    const char* cublas = std::getenv("CUBLAS_WORKSPACE_CONFIG");
    const std::lock_guard<std::mutex> lock(cublasConfigMutex);
    cublasConfigWhenDeterministic = cublas == nullptr ? "" : cublas;
  }
  at::Context& context = at::globalContext();
  const bool was = context.deterministicAlgorithms();
  // Benchmark mode picks each convolution's algorithm by timing it: a run's choice may differ from the next's.
  if (on && !was) {
    benchmarkBefore = context.benchmarkCuDNN();
    context.setBenchmarkCuDNN(false);
  } else if (!on && was) {
    context.setBenchmarkCuDNN(benchmarkBefore);
  }
  context.setDeterministicAlgorithms(on, /*warn_only=*/false);
  context.setDeterministicCuDNN(on);
}

bool deterministic() { return at::globalContext().deterministicAlgorithms(); }

const char* blasKindName(BlasKind kind) {
  switch (kind) {
    case BlasKind::OpenBLAS: return "openblas";
    case BlasKind::MKL: return "mkl";
    case BlasKind::Reference: return "reference";
    case BlasKind::Other: return "other";
    case BlasKind::None: return "none";
  }
  return "none";
}

BlasInfo detectBlas() {
  BlasInfo info;
  dl_iterate_phdr(
      [](dl_phdr_info* phdr, size_t, void* data) {
        auto* out = static_cast<BlasInfo*>(data);
        if (!phdr->dlpi_name || !*phdr->dlpi_name) return 0;
        const std::string path = realPath(phdr->dlpi_name);
        const std::string file = path.substr(path.rfind('/') + 1);
        if (contains(file, "openblas") || contains(path, "/openblas")) {
          *out = {BlasKind::OpenBLAS, path};
          return 1;  // OpenBLAS wins over any libblas shim next to it
        }
        if (contains(file, "mkl_rt") || contains(file, "mkl_core")) {
          *out = {BlasKind::MKL, path};
        } else if (contains(file, "libblas.so") && out->kind == BlasKind::None) {
          // Debian's alternatives: /usr/lib/<triple>/blas/libblas.so.3 is the netlib reference.
          *out = {contains(path, "/blas/libblas") ? BlasKind::Reference : BlasKind::Other, path};
        }
        return 0;
      },
      &info);
  if (info.kind == BlasKind::None && at::hasMKL()) info = {BlasKind::MKL, ""};
  return info;
}

BuildInfo buildInfo() {
  BuildInfo info;
  info.libtorchVersion = TORCH_VERSION;
  Dl_info dl{};
  if (dladdr(reinterpret_cast<void*>(&at::get_num_threads), &dl) && dl.dli_fname) {
    info.libtorchLibrary = realPath(dl.dli_fname);
  }
#ifdef PIRL_WITH_CUDA
  info.cudaCompiled = true;
#endif
  info.cudaAvailable = at::hasCUDA();
  if (info.cudaAvailable) info.cudaDeviceCount = static_cast<int>(at::detail::getCUDAHooks().getNumGPUs());
  info.gloo = distributed::available();
  info.nccl = distributed::ncclAvailable();
  info.cxx11Abi = _GLIBCXX_USE_CXX11_ABI != 0;
  info.blas = detectBlas();
  info.numThreads = numThreads();
  info.numInteropThreads = at::get_num_interop_threads();
#if AT_PARALLEL_OPENMP
  info.parallelBackend = "openmp";
#elif AT_PARALLEL_NATIVE
  info.parallelBackend = "native";
#else
  info.parallelBackend = "tbb";
#endif
  return info;
}

}  // namespace pirl
