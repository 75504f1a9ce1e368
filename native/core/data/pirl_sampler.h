// One PIRL training sample = two views (shared/PIRL.md, "Data"): the image branch I and the jigsaw
// branch I_t (9 patches in a recorded random order), made for a whole batch in parallel.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "transforms.h"

namespace pirl::data {

struct SamplerConfig {
  int64_t imageSize = 224;   // S
  int64_t jigsawSize = 255;  // J: the jigsaw crop, split into 3×3 cells of J/3
  int64_t patchSize = 64;    // P: one patch per cell, at a random offset in [0, J/3 − P]
  double imageScaleMin = 0.08, imageScaleMax = 1.0;
  double jigsawScaleMin = 0.6, jigsawScaleMax = 1.0;
  PhotometricOptions photometric;
};

// "paper": 224 / 255 / 64. "small" (28–96 px data): 32 / 36 / 9, the paper's ratios (J ≈ 1.14·S,
// P = 0.75·J/3).
SamplerConfig presetConfig(const std::string& name);
void checkConfig(const SamplerConfig& config);

struct Batch {
  at::Tensor images;        // B×3×S×S float32, normalised
  at::Tensor patches;       // B×9×3×P×P float32, normalised, in the order of `permutations`
  at::Tensor permutations;  // B×9 int64: patches[b][k] comes from cell permutations[b][k] (row-major)
};

// source: N×H×W×C uint8 (C = 1 or 3); rows: the B source rows to use; sampleIndices: their dataset
// indices, which with (seed, epoch) decide every random choice.
Batch makeBatch(const at::Tensor& source, const at::Tensor& rows, const at::Tensor& sampleIndices, uint64_t seed,
                uint64_t epoch, const SamplerConfig& config);

// The evaluation transform: the whole image resized to size×size, normalised, no augmentation.
at::Tensor evalImages(const at::Tensor& source, const at::Tensor& rows, int64_t size);

}  // namespace pirl::data
