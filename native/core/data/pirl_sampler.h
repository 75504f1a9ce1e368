// One PIRL training sample = two views (docs/PIRL.md, "Data"): the image branch I and the jigsaw
// branch I_t (9 patches in a recorded random order, jigsaw.h), made for a whole batch in parallel.
#pragma once

#include <ATen/ATen.h>

#include "batch_buffers.h"
#include "transforms.h"

namespace pirl::data {

// Every field is set by the caller: the presets and defaults live in TypeScript (lib/config.ts).
struct SamplerConfig {
  int64_t imageSize;   // S
  int64_t jigsawSize;  // J: the jigsaw crop, split into 3×3 cells of J/3
  int64_t patchSize;   // P: one patch per cell, at a random offset in [0, J/3 − P]
  double imageScaleMin, imageScaleMax;
  double jigsawScaleMin, jigsawScaleMax;
  PhotometricOptions photometric;
};

void checkConfig(const SamplerConfig& config);

struct Batch {
  at::Tensor images;        // B×3×S×S float32, normalised
  at::Tensor patches;       // B×9×3×P×P float32, normalised, in the order of `permutations`
  at::Tensor permutations;  // B×9 int64: patches[b][k] comes from cell permutations[b][k] (row-major)
};

// source: N×H×W×C uint8 (C = 1 or 3); rows: the B source rows to use; sampleIndices: their dataset
// indices, which with (seed, epoch) decide every random choice. `pinned` makes the batch in
// page-locked memory, so that it reaches a GPU by non-blocking copies (a CUDA libtorch only); otherwise
// `buffers`, where given, lends the memory.
Batch makeBatch(const at::Tensor& source, const at::Tensor& rows, const at::Tensor& sampleIndices, uint64_t seed,
                uint64_t epoch, const SamplerConfig& config, bool pinned, BatchBuffers* buffers = nullptr);

// The evaluation transform: the whole image resized to size×size, normalised, no augmentation.
at::Tensor evalImages(const at::Tensor& source, const at::Tensor& rows, int64_t size);

}  // namespace pirl::data
