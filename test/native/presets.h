// Named option sets for the native tests: the C++ option structs have no defaults (lib/config.ts
// owns them), so a test names the values it builds with. These mirror the paper's constants
// (docs/PIRL.md); a test that depends on one sets it explicitly.
#pragma once

#include <string>

#include "core/data/pirl_sampler.h"
#include "core/model/pirl_model.h"
#include "core/pirl_loss.h"
#include "core/train/sgd.h"
#include "core/train/train_state.h"

namespace pirl::testing {

inline model::PirlModelOptions modelOptions(model::Arch arch, model::Stem stem = model::Stem::Small, double width = 1.0) {
  return {{arch, stem, width}, /*embeddingDim=*/128, /*channelsLast=*/false, /*patchRunningStats=*/false};
}

// λ 0.5, τ 0.07, K 4096, μ 0.5, NCE with Z frozen, per-sample negatives, the positive not excluded.
inline PirlLossOptions paperLoss() {
  return {0.5, 0.07, 4096, 0.5, nce::Mode::Nce, ZMode::Frozen, 0.99, false, false};
}

inline train::SgdOptions paperSgd() { return {0.9, 1e-4}; }

// "paper": 224 / 255 / 64, the four photometric ops in turn (VISSL's); "small": 32 / 36 / 9 (the same ratios), one
// of them drawn; otherwise the paper's augmentations (lib/config.ts's PRESETS).
inline data::SamplerConfig samplerPreset(const std::string& name) {
  const bool small = name == "small";
  const data::PhotometricOptions photometric{
      {0.4, 0.4, 0.4, 0.2}, 0.66, 0.2, 0.5, small ? data::PhotometricOps::One : data::PhotometricOps::All};
  if (small) return {32, 36, 9, 0.08, 1.0, 0.6, 1.0, photometric};
  return {224, 255, 64, 0.08, 1.0, 0.6, 1.0, photometric};
}

// A small training state: ResNet-18 (small stem, width 0.25), 16-d embeddings, the paper's loss with
// K = 32 over a bank of `bankRows`, fp32; the weights and the bank seeded by `seed`.
inline train::TrainState tinyTrainState(uint64_t seed, int64_t bankRows) {
  at::manual_seed(seed);
  model::PirlModelOptions o = modelOptions(model::Arch::ResNet18, model::Stem::Small, 0.25);
  o.embeddingDim = 16;
  PirlLossOptions loss = paperLoss();
  loss.numNegatives = 32;
  return train::TrainState(model::PirlModel(o), std::make_shared<MemoryBank>(bankRows, 16, seed), loss,
                           {paperSgd(), train::Precision::Fp32, seed, /*cudaGraphs=*/false});
}

// `fp32`'s model and bank in float64, where they are, training with `loss` from `seed`: comparisons of runs
// past float32 rounding (a ReLU input within rounding of 0 goes either way, and training grows that).
inline train::TrainState inFloat64(train::TrainState& fp32, const PirlLossOptions& loss, uint64_t seed) {
  model::PirlModel net = fp32.model();
  net->to(at::kDouble);
  auto bank = std::make_shared<MemoryBank>(fp32.bank().rows().to(at::kDouble), fp32.bank().generatorState());
  return train::TrainState(net, bank, loss, {paperSgd(), train::Precision::Fp32, seed, /*cudaGraphs=*/false});
}

}  // namespace pirl::testing
