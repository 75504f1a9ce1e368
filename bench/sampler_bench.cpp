// The PIRL sampler, op by op and whole batches, the fast implementation next to the frozen reference
// (test/native/reference) on the same inputs in one process: prints one JSON object for
// scripts/bench-data.js. Usage: pirl_bench_sampler PRESET SOURCE_H SOURCE_W BATCH THREADS REPS
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/data/pirl_sampler.h"
#include "core/runtime.h"
#include "presets.h"
#include "reference/sampler_reference.h"

namespace {

using namespace pirl::data;
using Clock = std::chrono::steady_clock;

// A photo-like source: smooth colour gradients and edges plus mild noise (hue, contrast and sharpness
// take data-dependent paths, so constant or white-noise images would time them wrongly).
at::Tensor photoLike(int64_t n, int64_t h, int64_t w) {
  const at::Tensor y = at::linspace(0, 1, h).view({1, h, 1, 1}), x = at::linspace(0, 1, w).view({1, 1, w, 1});
  const at::Tensor phase = at::arange(n, at::kFloat).view({n, 1, 1, 1}) * 0.7 + at::tensor({0.0f, 2.1f, 4.2f}).view({1, 1, 1, 3});
  at::Tensor img = 128 + 90 * at::sin(6 * x + 4 * y + phase) + 30 * at::sign(at::sin(13 * x * y + phase));
  img = img + 12 * at::randn({n, h, w, 3});
  return img.clamp(0, 255).round().to(at::kByte).contiguous();
}

// Median microseconds of `fn` over `reps` runs, each on a fresh copy of `input` (ops work in place).
double medianMicros(const Image& input, int reps, const std::function<void(Image&)>& fn) {
  std::vector<double> us;
  for (int r = 0; r < reps; ++r) {
    Image image = input;
    const auto t0 = Clock::now();
    fn(image);
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  std::nth_element(us.begin(), us.begin() + us.size() / 2, us.end());
  return us[us.size() / 2];
}

std::string json(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s PRESET(paper|small) SOURCE_H SOURCE_W BATCH THREADS REPS\n", argv[0]);
    return 2;
  }
  const SamplerConfig config = pirl::testing::samplerPreset(argv[1]);
  const int64_t H = std::stoll(argv[2]), W = std::stoll(argv[3]), B = std::stoll(argv[4]);
  pirl::setNumThreads(std::stoi(argv[5]));
  const int reps = std::stoi(argv[6]);
  at::manual_seed(0);
  const at::Tensor source = photoLike(std::max<int64_t>(B, 8), H, W);
  const ImageView view{source.data_ptr<uint8_t>(), H, W, 3};

  // Per op, at the two sizes the sampler applies it to: the image view (S) and a patch (P).
  std::string ops = "{";
  const Box whole{0, 0, static_cast<double>(W), static_cast<double>(H)};
  for (const int64_t size : {config.imageSize, config.patchSize}) {
    const Image input = reference::cropResize(view, whole, size);
    const std::vector<std::pair<std::string, std::pair<std::function<void(Image&)>, std::function<void(Image&)>>>> table{
        {"brightness", {[](Image& i) { reference::adjustBrightness(i, 1.3); }, [](Image& i) { adjustBrightness(i, 1.3); }}},
        {"contrast", {[](Image& i) { reference::adjustContrast(i, 0.7); }, [](Image& i) { adjustContrast(i, 0.7); }}},
        {"saturation", {[](Image& i) { reference::adjustSaturation(i, 1.3); }, [](Image& i) { adjustSaturation(i, 1.3); }}},
        {"hue", {[](Image& i) { reference::adjustHue(i, 0.1); }, [](Image& i) { adjustHue(i, 0.1); }}},
        {"posterize", {[](Image& i) { reference::posterize(i, 5); }, [](Image& i) { posterize(i, 5); }}},
        {"sharpness", {[](Image& i) { reference::sharpness(i, 1.5); }, [](Image& i) { sharpness(i, 1.5); }}},
        {"solarize", {[](Image& i) { reference::solarize(i, 100); }, [](Image& i) { solarize(i, 100); }}},
        {"autocontrast", {[](Image& i) { reference::autocontrast(i); }, [](Image& i) { autocontrast(i); }}},
        {"grayscale", {[](Image& i) { reference::grayscale(i); }, [](Image& i) { grayscale(i); }}},
        {"flip", {[](Image& i) { reference::flipHorizontal(i); }, [](Image& i) { flipHorizontal(i); }}},
        {"normalize", {[](Image& i) { std::vector<float> o(i.pixels.size()); reference::normalizeInto(i, o.data()); },
                       [](Image& i) { std::vector<float> o(i.pixels.size()); normalizeInto(i, o.data()); }}},
        {"cropResize", {[&](Image& i) { i = reference::cropResize(view, {W * 0.1, H * 0.2, W * 0.5, H * 0.6}, i.height); },
                        [&](Image& i) { i = cropResize(view, {W * 0.1, H * 0.2, W * 0.5, H * 0.6}, i.height); }}},
    };
    ops += std::string(ops.size() > 1 ? ", " : "") + "\"" + std::to_string(size) + "px\": {";
    for (size_t k = 0; k < table.size(); ++k) {
      const double ref = medianMicros(input, reps * 10, table[k].second.first);
      const double fast = medianMicros(input, reps * 10, table[k].second.second);
      ops += (k ? ", " : "") + ("\"" + table[k].first + "\": {\"referenceUs\": " + json(ref) + ", \"fastUs\": " + json(fast) + "}");
    }
    ops += "}";
  }
  ops += "}";

  // Whole batches: samples/s of the reference, the fast sampler as this CPU runs it, and its baseline
  // x86-64 build (the same where the CPU lacks AVX2), best of `reps`, the three interleaved.
  const at::Tensor rows = at::arange(B, at::kLong);
  const auto samplesPerSecond = [&](const std::function<void()>& batch) {
    const auto t0 = Clock::now();
    batch();
    return B / std::chrono::duration<double>(Clock::now() - t0).count();
  };
  double bestRef = 0, bestFast = 0, bestBaseline = 0;
  for (int r = 0; r <= reps; ++r) {
    const double ref = samplesPerSecond([&] { reference::makeBatch(source, rows, rows, 1, r, config); });
    const double fast = samplesPerSecond([&] { makeBatch(source, rows, rows, 1, r, config, /*pinned=*/false); });
    forceBaselinePixelOps(true);
    const double baseline = samplesPerSecond([&] { makeBatch(source, rows, rows, 1, r, config, /*pinned=*/false); });
    forceBaselinePixelOps(false);
    if (r > 0) bestRef = std::max(bestRef, ref), bestFast = std::max(bestFast, fast), bestBaseline = std::max(bestBaseline, baseline);  // r = 0 warms up
  }
  std::printf("{\"preset\": \"%s\", \"source\": [%lld, %lld], \"batch\": %lld, \"threads\": %d, \"pixelOps\": \"%s\", "
              "\"samplesPerSecond\": {\"reference\": %s, \"fast\": %s, \"fastBaselineBuild\": %s}, \"speedup\": %.2f, \"opMicroseconds\": %s}\n",
              argv[1], static_cast<long long>(H), static_cast<long long>(W), static_cast<long long>(B), pirl::numThreads(), pixelOpsIsa(),
              json(bestRef).c_str(), json(bestFast).c_str(), json(bestBaseline).c_str(), bestFast / bestRef, ops.c_str());
  return 0;
}
