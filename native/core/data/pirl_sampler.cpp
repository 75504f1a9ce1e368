#include "pirl_sampler.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <atomic>

#include "../dtype.h"
#include "jigsaw.h"

namespace pirl::data {

namespace {

void checkSource(const at::Tensor& source, const at::Tensor& rows) {
  TORCH_CHECK_TYPE(source.scalar_type() == at::kByte && source.is_cpu(), "source must be a uint8 CPU tensor, got ",
                   dtypeName(source.scalar_type()), " on ", source.device());
  TORCH_CHECK_VALUE(source.dim() == 4 && (source.size(3) == 1 || source.size(3) == 3) && source.size(1) > 0 &&
                        source.size(2) > 0,
                    "source must be N×H×W×C with C = 1 or 3, got ", source.sizes());
  TORCH_CHECK_TYPE(rows.scalar_type() == at::kLong && rows.dim() == 1, "rows must be a 1-D int64 tensor");
  if (rows.numel() > 0) {
    TORCH_CHECK_INDEX(rows.min().item<int64_t>() >= 0 && rows.max().item<int64_t>() < source.size(0),
                      "rows must be in [0, ", source.size(0), ")");
  }
}

// Runs make(b) for every b in [0, B) on the intra-op threads, each taking the next sample when it is
// free: samples differ in cost (the photometric ops drawn) and a thread may lose its core on a busy
// machine, so fixed ranges per thread would wait for the slowest.
template <typename Fn>
void forEachSample(int64_t B, Fn&& make) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, B, 1, [&](int64_t, int64_t) {
    for (int64_t b = next++; b < B; b = next++) make(b);
  });
}

ImageView viewOf(const at::Tensor& source, int64_t row) {
  const int64_t h = source.size(1), w = source.size(2), c = source.size(3);
  return {source.data_ptr<uint8_t>() + row * h * w * c, h, w, c};
}

}  // namespace

void checkConfig(const SamplerConfig& c) {
  TORCH_CHECK_VALUE(c.imageSize >= 1, "imageSize must be >= 1, got ", c.imageSize);
  checkJigsawGeometry(c.jigsawSize, c.patchSize);
  TORCH_CHECK_VALUE(0 < c.imageScaleMin && c.imageScaleMin <= c.imageScaleMax && c.imageScaleMax <= 1,
                    "image crop scale must satisfy 0 < min <= max <= 1, got [", c.imageScaleMin, ", ", c.imageScaleMax, "]");
  TORCH_CHECK_VALUE(0 < c.jigsawScaleMin && c.jigsawScaleMin <= c.jigsawScaleMax && c.jigsawScaleMax <= 1,
                    "jigsaw crop scale must satisfy 0 < min <= max <= 1, got [", c.jigsawScaleMin, ", ",
                    c.jigsawScaleMax, "]");
}

Batch makeBatch(const at::Tensor& source, const at::Tensor& rows, const at::Tensor& sampleIndices, uint64_t seed,
                uint64_t epoch, const SamplerConfig& config, bool pinned, BatchBuffers* buffers) {
  checkSource(source, rows);
  checkConfig(config);
  TORCH_CHECK_VALUE(sampleIndices.scalar_type() == at::kLong && sampleIndices.sizes() == rows.sizes(),
                    "sampleIndices must be int64 with one index per row");
  const int64_t B = rows.size(0), S = config.imageSize, J = config.jigsawSize, P = config.patchSize;
  TORCH_CHECK_VALUE(!pinned || at::hasCUDA(), "pinned batches need a CUDA libtorch and a GPU");
  const auto empty = [&](at::IntArrayRef sizes, at::ScalarType dtype) {
    return buffers && !pinned ? buffers->empty(sizes, dtype) : at::empty(sizes, at::TensorOptions().pinned_memory(pinned).dtype(dtype));
  };
  Batch batch{empty({B, 3, S, S}, at::kFloat), empty({B, kJigsawPatches, 3, P, P}, at::kFloat), empty({B, kJigsawPatches}, at::kLong)};
  const at::Tensor src = source.contiguous();
  const int64_t* rowPtr = rows.data_ptr<int64_t>();
  const int64_t* indexPtr = sampleIndices.data_ptr<int64_t>();
  float* images = batch.images.data_ptr<float>();
  float* patches = batch.patches.data_ptr<float>();
  int64_t* perms = batch.permutations.data_ptr<int64_t>();
  forEachSample(B, [&](int64_t b) {
    SampleRng rng(seed, epoch, static_cast<uint64_t>(indexPtr[b]));
    const ImageView view = viewOf(src, rowPtr[b]);
    // Image branch I.
    Image image = cropResize(view, randomResizedCropBox(rng, view.width, view.height, config.imageScaleMin,
                                                        config.imageScaleMax), S);
    photometric(image, rng, config.photometric);
    normalizeInto(image, images + b * 3 * S * S);
    // Jigsaw branch I_t: an independent crop cut into 9 shuffled patches, each augmented on its own;
    // only the patches' pixels of the J×J resample are computed.
    const Box jigsaw = randomResizedCropBox(rng, view.width, view.height, config.jigsawScaleMin, config.jigsawScaleMax);
    cutJigsaw(J, P, rng, [&](int64_t k, int64_t cell, int64_t x, int64_t y) {
      Image patch = cropResizeWindow(view, jigsaw, J, x, y, P, P);
      photometric(patch, rng, config.photometric);
      normalizeInto(patch, patches + (b * kJigsawPatches + k) * 3 * P * P);
      perms[b * kJigsawPatches + k] = cell;
    });
  });
  return batch;
}

at::Tensor evalImages(const at::Tensor& source, const at::Tensor& rows, int64_t size) {
  checkSource(source, rows);
  TORCH_CHECK_VALUE(size >= 1, "size must be >= 1, got ", size);
  const int64_t B = rows.size(0);
  at::Tensor out = at::empty({B, 3, size, size}, at::kFloat);
  const at::Tensor src = source.contiguous();
  const int64_t* rowPtr = rows.data_ptr<int64_t>();
  float* o = out.data_ptr<float>();
  forEachSample(B, [&](int64_t b) {
    const ImageView view = viewOf(src, rowPtr[b]);
    normalizeInto(cropResize(view, {0, 0, static_cast<double>(view.width), static_cast<double>(view.height)}, size),
                  o + b * 3 * size * size);
  });
  return out;
}

}  // namespace pirl::data
