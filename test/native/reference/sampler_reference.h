// The sampler as it was before it was made fast (pirl 0.1, double-precision per-pixel ops, one pass
// per op): the frozen reference the fast sampler's per-op results and output statistics are tested
// against (test/native/sampler_test.cpp) and benchmarked next to (bench/sampler_bench.cpp).
#pragma once

#include "core/data/pirl_sampler.h"

namespace pirl::data::reference {

Image cropResize(const ImageView& src, const Box& box, int64_t size);
void adjustBrightness(Image& image, double factor);
void adjustContrast(Image& image, double factor);
void adjustSaturation(Image& image, double factor);
void adjustHue(Image& image, double shift);
void posterize(Image& image, int bits);
void solarize(Image& image, int threshold);
void autocontrast(Image& image);
void sharpness(Image& image, double factor);
void grayscale(Image& image);
void flipHorizontal(Image& image);
void photometric(Image& image, SampleRng& rng, const PhotometricOptions& options);
void normalizeInto(const Image& image, float* chw);

// makeBatch of pirl 0.1: the same random draws in the same order as the fast one.
Batch makeBatch(const at::Tensor& source, const at::Tensor& rows, const at::Tensor& sampleIndices, uint64_t seed,
                uint64_t epoch, const SamplerConfig& config);

}  // namespace pirl::data::reference
