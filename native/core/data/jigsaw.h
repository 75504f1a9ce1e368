// PIRL's jigsaw transform (docs/PIRL.md, "Data"): a J×J crop split into a 3×3 grid of cells of
// c = J/3, one P×P patch from each cell at a random offset in [0, c − P], and the 9 patches put in an
// order drawn uniformly from all 9! permutations.
#pragma once

#include <cstdint>
#include <functional>

#include "sample_rng.h"

namespace pirl::data {

constexpr int64_t kJigsawCells = 3;                            // the grid is 3×3
constexpr int64_t kJigsawPatches = kJigsawCells * kJigsawCells;  // 9 patches per sample

// J must be a multiple of 3 and P fit in a cell; c10::ValueError otherwise.
void checkJigsawGeometry(int64_t jigsawSize, int64_t patchSize);

// Lays out the 9 patches of a J×J jigsaw crop in a random order and hands each to `use(k, cell, x, y)`
// as soon as it is drawn: patch k comes from cell `cell` (row-major), its top-left corner at (x, y) of
// the crop. The offsets and the order come from `rng`, which `use` may draw from too (each patch is
// augmented on its own, in the same stream).
void cutJigsaw(int64_t jigsawSize, int64_t patchSize, SampleRng& rng,
               const std::function<void(int64_t k, int64_t cell, int64_t x, int64_t y)>& use);

}  // namespace pirl::data
