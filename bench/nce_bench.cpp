// One measurement of the NCE loss (forward + backward) per process, so that peak memory is this
// case's alone: prints {"ms": [...], "extraMB": ...} for scripts/bench-nce.js (CPU) and
// scripts/bench-gpu.js (cuda) to collect. impl `draw` times what a training step does before the op: the
// B×K keyed draw of negatives, the positive excluded. On cuda each repetition ends with a device
// synchronisation (the op's own time, no JavaScript call around it) and extraMB is the caching
// allocator's peak over what the inputs hold.
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/memory_bank.h"
#include "core/nce/nce.h"
#include "core/runtime.h"

#ifdef PIRL_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace {

// Resident and peak-resident memory of this process, in MB (Linux /proc).
double procStatusMB(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::stod(line.substr(std::strlen(key))) / 1024.0;
  }
  return -1;
}

}  // namespace

static int run(int argc, char** argv) {
  if (argc < 8 || argc > 11) {
    std::fprintf(stderr, "usage: %s B K N D impl(fused|shared|reference|draw) threads reps [device(cpu|cuda) [z [mode(nce|infonce)]]]\n"
                 "  z: the NCE partition estimate given to the op; <= 0 (default) estimates it from the batch\n", argv[0]);
    return 2;
  }
  const int64_t B = std::stoll(argv[1]), K = std::stoll(argv[2]), N = std::stoll(argv[3]), D = std::stoll(argv[4]);
  const std::string impl = argv[5];
  pirl::setNumThreads(std::stoi(argv[6]));
  const int reps = std::stoi(argv[7]);
  const at::Device device(argc > 8 ? argv[8] : "cpu");
  const double z = argc > 9 ? std::stod(argv[9]) : -1;
  const std::string mode = argc > 10 ? argv[10] : "nce";
  if (mode != "nce" && mode != "infonce") throw std::invalid_argument("mode must be nce or infonce, got " + mode);
#ifndef PIRL_WITH_CUDA
  if (device.is_cuda()) {
    std::fprintf(stderr, "%s: built without CUDA kernels\n", argv[0]);
    return 2;
  }
#endif

  at::manual_seed(0);
  pirl::MemoryBank memoryBank(N, D, 0, device);
  const at::Tensor& bank = memoryBank.rows();
  const auto on = at::TensorOptions().device(device);
  at::Tensor x0 = at::randn({B, D}, on);
  x0.div_(x0.norm(2, 1, true));
  const at::Tensor positives = at::randint(N, {B}, on.dtype(at::kLong));
  const at::Tensor negatives = impl == "shared" ? at::randint(N, {K}, on.dtype(at::kLong)) : at::randint(N, {B, K}, on.dtype(at::kLong));
  const pirl::nce::Options options{0.07, mode == "nce" ? pirl::nce::Mode::Nce : pirl::nce::Mode::InfoNce, z};

  std::vector<double> ms;
  std::ofstream("/proc/self/clear_refs") << "5";     // resets VmHWM: set-up peaks do not count
  const double baseline = procStatusMB("VmRSS:");  // bank, embeddings and indices in place
#ifdef PIRL_WITH_CUDA
  const c10::DeviceIndex cudaIndex = device.index() < 0 ? 0 : device.index();
  double deviceBaseline = 0;
  if (device.is_cuda()) {  // the inputs in place; set-up peaks do not count
    deviceBaseline = static_cast<double>(c10::cuda::CUDACachingAllocator::getDeviceStats(cudaIndex).allocated_bytes[0].current);
    c10::cuda::CUDACachingAllocator::resetPeakStats(cudaIndex);
  }
#endif
  for (int r = 0; r <= reps; ++r) {  // r = 0 warms up
    at::Tensor x = x0.clone().requires_grad_(true);
    const auto t0 = std::chrono::steady_clock::now();
    if (impl == "draw") {
      memoryBank.sampleNegatives(B, K, positives, {static_cast<uint64_t>(r), positives});
    } else {
      // The bank is a MemoryBank's (unit rows by construction), as nceLoss() reads it: neither reads it whole to check.
      auto result = impl == "reference"
                        ? pirl::nce::nceLossReference(x, bank, positives, negatives, options, pirl::nce::BankRows::Unit)
                        : pirl::nce::nceLoss(x, bank, positives, negatives, options, pirl::IndexCheck::Check, pirl::nce::BankRows::Unit);
      result.loss.backward();
    }
#ifdef PIRL_WITH_CUDA
    if (device.is_cuda()) c10::cuda::device_synchronize();
#endif
    const double elapsed = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) ms.push_back(elapsed);
  }
  double extra = procStatusMB("VmHWM:") - baseline;
#ifdef PIRL_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(cudaIndex);
    extra = (static_cast<double>(stats.allocated_bytes[0].peak) - deviceBaseline) / (1 << 20);
  }
#endif
  std::printf("{\"ms\": [");
  for (size_t i = 0; i < ms.size(); ++i) std::printf("%s%.3f", i ? ", " : "", ms[i]);
  std::printf("], \"extraMB\": %.1f}\n", std::max(0.0, extra));
  return 0;
}

// A bad argument (a number that does not parse, an unknown device) or a failed run: said, exit 2.
int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "%s: %s\n", argv[0], e.what_without_backtrace());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", argv[0], e.what());
    return 2;
  }
}
