// Forward+backward throughput of the PIRL network (images pass + patches pass, both heads), one
// configuration per process: prints {"msPerStep": [...]} for scripts/bench-model.js.
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "core/model/pirl_model.h"
#include "core/runtime.h"

int main(int argc, char** argv) {
  if (argc != 9) {
    std::fprintf(stderr, "usage: %s arch stem(imagenet|small) batch imageSize patchSize channelsLast(0|1) threads reps\n", argv[0]);
    return 2;
  }
  const std::string arch = argv[1];
  const auto trunkArch = arch == "resnet50"   ? pirl::model::Arch::ResNet50
                         : arch == "resnet34" ? pirl::model::Arch::ResNet34
                                              : pirl::model::Arch::ResNet18;
  const auto stem = std::string(argv[2]) == "small" ? pirl::model::Stem::Small : pirl::model::Stem::ImageNet;
  const int64_t batch = std::stoll(argv[3]), imageSize = std::stoll(argv[4]), patchSize = std::stoll(argv[5]);
  const pirl::model::PirlModelOptions options{
      {trunkArch, stem, 1.0}, 128, /*channelsLast=*/std::string(argv[6]) == "1", /*patchRunningStats=*/false};
  pirl::setNumThreads(std::stoi(argv[7]));
  const int reps = std::stoi(argv[8]);

  at::manual_seed(0);
  pirl::model::PirlModel model(options);
  model->train();
  const at::Tensor images = at::randn({batch, 3, imageSize, imageSize});
  const at::Tensor patches = at::randn({batch, 9, 3, patchSize, patchSize});
  std::vector<double> ms;
  for (int r = 0; r <= reps; ++r) {  // r = 0 warms up
    const auto t0 = std::chrono::steady_clock::now();
    model->zero_grad();
    const auto e = model->forward(images, patches);
    (e.f.sum() + e.g.sum()).backward();
    const double elapsed = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) ms.push_back(elapsed);
  }
  std::printf("{\"msPerStep\": [");
  for (size_t i = 0; i < ms.size(); ++i) std::printf("%s%.1f", i ? ", " : "", ms[i]);
  std::printf("]}\n");
  return 0;
}
