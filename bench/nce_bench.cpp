// One measurement of the NCE loss (forward + backward) per process, so that peak memory is this
// case's alone: prints {"ms": [...], "extraMB": ...} for scripts/bench-nce.js to collect. impl `draw`
// times what a training step does before the op: the B×K keyed draw of negatives, the positive excluded.
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

int main(int argc, char** argv) {
  if (argc != 8) {
    std::fprintf(stderr, "usage: %s B K N D impl(fused|shared|reference|draw) threads reps\n", argv[0]);
    return 2;
  }
  const int64_t B = std::stoll(argv[1]), K = std::stoll(argv[2]), N = std::stoll(argv[3]), D = std::stoll(argv[4]);
  const std::string impl = argv[5];
  pirl::setNumThreads(std::stoi(argv[6]));
  const int reps = std::stoi(argv[7]);

  at::manual_seed(0);
  pirl::MemoryBank memoryBank(N, D, 0);
  const at::Tensor& bank = memoryBank.rows();
  at::Tensor x0 = at::randn({B, D});
  x0.div_(x0.norm(2, 1, true));
  const at::Tensor positives = at::randint(N, {B}, at::kLong);
  const at::Tensor negatives = impl == "shared" ? at::randint(N, {K}, at::kLong) : at::randint(N, {B, K}, at::kLong);
  const pirl::nce::Options options{0.07, pirl::nce::Mode::Nce, -1};

  std::vector<double> ms;
  std::ofstream("/proc/self/clear_refs") << "5";     // resets VmHWM: set-up peaks do not count
  const double baseline = procStatusMB("VmRSS:");  // bank, embeddings and indices in place
  for (int r = 0; r <= reps; ++r) {  // r = 0 warms up
    at::Tensor x = x0.clone().requires_grad_(true);
    const auto t0 = std::chrono::steady_clock::now();
    if (impl == "draw") {
      memoryBank.sampleNegatives(B, K, positives, {static_cast<uint64_t>(r), positives});
    } else {
      auto result = impl == "reference" ? pirl::nce::nceLossReference(x, bank, positives, negatives, options)
                                        : pirl::nce::nceLoss(x, bank, positives, negatives, options, pirl::IndexCheck::Check);
      result.loss.backward();
    }
    const double elapsed = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) ms.push_back(elapsed);
  }
  const double extra = procStatusMB("VmHWM:") - baseline;
  std::printf("{\"ms\": [");
  for (size_t i = 0; i < ms.size(); ++i) std::printf("%s%.3f", i ? ", " : "", ms[i]);
  std::printf("], \"extraMB\": %.1f}\n", std::max(0.0, extra));
  return 0;
}
