// PIRL's jigsaw transform (docs/PIRL.md, "Data"): a J×J crop split into a 3×3 grid of cells of
// c = J/3, one P×P patch from each cell at a random offset in [0, c − P], and the 9 patches put in an
// order drawn uniformly from all 9! permutations.
#pragma once

#include <cstdint>
#include <functional>

#include "sample_rng.h"
#include "transforms.h"

namespace pirl::data {

constexpr int64_t kJigsawCells = 3;                            // the grid is 3×3
constexpr int64_t kJigsawPatches = kJigsawCells * kJigsawCells;  // 9 patches per sample

// J must be a multiple of 3 and P fit in a cell; c10::ValueError otherwise.
void checkJigsawGeometry(int64_t jigsawSize, int64_t patchSize);

// Cuts the 9 patches of `jigsaw` in a random order and hands each to `use(k, cell, patch)` as soon as
// it is cut: patch k comes from cell `cell` (row-major). The offsets and the order come from `rng`,
// which `use` may draw from too (each patch is augmented on its own, in the same stream).
void cutJigsaw(const Image& jigsaw, int64_t patchSize, SampleRng& rng,
               const std::function<void(int64_t k, int64_t cell, Image& patch)>& use);

}  // namespace pirl::data
