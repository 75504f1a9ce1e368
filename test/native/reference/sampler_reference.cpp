#include "sampler_reference.h"

#include <ATen/Parallel.h>

#include "core/data/jigsaw.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>

namespace pirl::data::reference {

namespace {

inline uint8_t clamp8(double v) { return static_cast<uint8_t>(std::min(255.0, std::max(0.0, std::round(v)))); }

// ITU-R 601-2 luma, as PIL and torchvision compute grayscale.
inline double luma(const uint8_t* p) { return 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]; }

template <typename Fn>
void forEachPixel(Image& image, Fn&& fn) {
  for (size_t i = 0; i < image.pixels.size(); i += 3) fn(image.pixels.data() + i);
}

void blend(Image& image, const Image& degenerate, double factor) {
  for (size_t i = 0; i < image.pixels.size(); ++i) {
    image.pixels[i] = clamp8(degenerate.pixels[i] + factor * (image.pixels[i] - degenerate.pixels[i]));
  }
}

Image crop(const Image& src, int64_t x, int64_t y, int64_t size) {
  Image out(size, size);
  for (int64_t r = 0; r < size; ++r) std::copy_n(src.at(y + r, x), size * 3, out.at(r, 0));
  return out;
}

constexpr std::array<float, 3> kMean{0.485f, 0.456f, 0.406f};
constexpr std::array<float, 3> kStd{0.229f, 0.224f, 0.225f};

}  // namespace

Image cropResize(const ImageView& src, const Box& box, int64_t size) {
  Image out(size, size);
  const double sx = box.width / size, sy = box.height / size;
  for (int64_t y = 0; y < size; ++y) {
    const double fy = std::clamp(box.y + (y + 0.5) * sy - 0.5, 0.0, static_cast<double>(src.height - 1));
    const int64_t y0 = static_cast<int64_t>(fy), y1 = std::min(y0 + 1, src.height - 1);
    const double wy = fy - y0;
    for (int64_t x = 0; x < size; ++x) {
      const double fx = std::clamp(box.x + (x + 0.5) * sx - 0.5, 0.0, static_cast<double>(src.width - 1));
      const int64_t x0 = static_cast<int64_t>(fx), x1 = std::min(x0 + 1, src.width - 1);
      const double wx = fx - x0;
      uint8_t* o = out.at(y, x);
      for (int c = 0; c < 3; ++c) {
        const int64_t sc = src.channels == 1 ? 0 : c;  // gray sources become RGB here
        const auto px = [&](int64_t yy, int64_t xx) {
          return static_cast<double>(src.data[(yy * src.width + xx) * src.channels + sc]);
        };
        const double top = px(y0, x0) * (1 - wx) + px(y0, x1) * wx;
        const double bottom = px(y1, x0) * (1 - wx) + px(y1, x1) * wx;
        o[c] = clamp8(top * (1 - wy) + bottom * wy);
      }
    }
  }
  return out;
}

void adjustBrightness(Image& image, double factor) {
  forEachPixel(image, [&](uint8_t* p) {
    for (int c = 0; c < 3; ++c) p[c] = clamp8(p[c] * factor);
  });
}

void adjustContrast(Image& image, double factor) {
  double mean = 0;
  forEachPixel(image, [&](uint8_t* p) { mean += luma(p); });
  mean = std::round(mean / static_cast<double>(image.height * image.width));
  forEachPixel(image, [&](uint8_t* p) {
    for (int c = 0; c < 3; ++c) p[c] = clamp8(mean + factor * (p[c] - mean));
  });
}

void adjustSaturation(Image& image, double factor) {
  forEachPixel(image, [&](uint8_t* p) {
    const double gray = luma(p);
    for (int c = 0; c < 3; ++c) p[c] = clamp8(gray + factor * (p[c] - gray));
  });
}

void adjustHue(Image& image, double shift) {
  forEachPixel(image, [&](uint8_t* p) {
    const double r = p[0] / 255.0, g = p[1] / 255.0, b = p[2] / 255.0;
    const double mx = std::max({r, g, b}), mn = std::min({r, g, b}), d = mx - mn;
    double h = 0;
    if (d > 0) {
      if (mx == r) h = std::fmod((g - b) / d, 6.0);
      else if (mx == g) h = (b - r) / d + 2;
      else h = (r - g) / d + 4;
      h /= 6;
    }
    h = h + shift;
    h -= std::floor(h);
    const double s = mx > 0 ? d / mx : 0, v = mx;
    const double hh = h * 6;
    const int sector = static_cast<int>(hh) % 6;
    const double f = hh - std::floor(hh);
    const double q = v * (1 - s), t1 = v * (1 - s * f), t2 = v * (1 - s * (1 - f));
    const std::array<std::array<double, 3>, 6> rgb{{{v, t2, q}, {t1, v, q}, {q, v, t2}, {q, t1, v}, {t2, q, v}, {v, q, t1}}};
    for (int c = 0; c < 3; ++c) p[c] = clamp8(rgb[sector][c] * 255);
  });
}

void posterize(Image& image, int bits) {
  const uint8_t mask = static_cast<uint8_t>(0xFF << (8 - bits));
  for (auto& v : image.pixels) v &= mask;
}

void solarize(Image& image, int threshold) {
  for (auto& v : image.pixels) {
    if (v >= threshold) v = static_cast<uint8_t>(255 - v);
  }
}

void autocontrast(Image& image) {
  for (int c = 0; c < 3; ++c) {
    uint8_t lo = 255, hi = 0;
    for (size_t i = c; i < image.pixels.size(); i += 3) {
      lo = std::min(lo, image.pixels[i]);
      hi = std::max(hi, image.pixels[i]);
    }
    if (hi <= lo) continue;
    const double scale = 255.0 / (hi - lo);
    for (size_t i = c; i < image.pixels.size(); i += 3) image.pixels[i] = clamp8((image.pixels[i] - lo) * scale);
  }
}

void sharpness(Image& image, double factor) {
  // PIL's SMOOTH kernel [[1,1,1],[1,5,1],[1,1,1]]/13 on the interior; the border stays as it is.
  Image smooth = image;
  for (int64_t y = 1; y + 1 < image.height; ++y) {
    for (int64_t x = 1; x + 1 < image.width; ++x) {
      for (int c = 0; c < 3; ++c) {
        int sum = 4 * image.at(y, x)[c];
        for (int dy = -1; dy <= 1; ++dy) {
          for (int dx = -1; dx <= 1; ++dx) sum += image.at(y + dy, x + dx)[c];
        }
        smooth.at(y, x)[c] = clamp8(sum / 13.0);
      }
    }
  }
  blend(image, smooth, factor);
}

void grayscale(Image& image) {
  forEachPixel(image, [&](uint8_t* p) { p[0] = p[1] = p[2] = clamp8(luma(p)); });
}

void flipHorizontal(Image& image) {
  for (int64_t y = 0; y < image.height; ++y) {
    for (int64_t x = 0; x < image.width / 2; ++x) {
      std::swap_ranges(image.at(y, x), image.at(y, x) + 3, image.at(y, image.width - 1 - x));
    }
  }
}

void photometric(Image& image, SampleRng& rng, const PhotometricOptions& o) {
  std::array<int, 4> order{0, 1, 2, 3};
  std::shuffle(order.begin(), order.end(), rng.engine());
  // Factors are drawn before use, in a fixed order, so each op's parameter is reproducible.
  const double b = rng.uniform(1 - o.jitter.brightness, 1 + o.jitter.brightness);
  const double c = rng.uniform(1 - o.jitter.contrast, 1 + o.jitter.contrast);
  const double s = rng.uniform(1 - o.jitter.saturation, 1 + o.jitter.saturation);
  const double h = rng.uniform(-o.jitter.hue, o.jitter.hue);
  for (int op : order) {
    if (op == 0) reference::adjustBrightness(image, b);
    if (op == 1) reference::adjustContrast(image, c);
    if (op == 2) reference::adjustSaturation(image, s);
    if (op == 3) reference::adjustHue(image, h);
  }
  const bool photometricApplies = rng.bernoulli(o.photometricProbability);
  if (photometricApplies && o.photometricOps == PhotometricOps::All) {
    // VISSL's ImgPilRandomPhotometric: RandomApply of the four, in its order, each with its value drawn.
    const int bits = static_cast<int>(4 + rng.below(5));
    reference::posterize(image, bits);
    const double factor = rng.uniform(0.1, 1.9);
    reference::sharpness(image, factor);
    const int threshold = static_cast<int>(rng.below(257));
    reference::solarize(image, threshold);
    reference::autocontrast(image);
  } else if (photometricApplies) {
    switch (rng.below(4)) {
      case 0: reference::posterize(image, static_cast<int>(4 + rng.below(5))); break;   // 4..8 bits
      case 1: reference::sharpness(image, rng.uniform(0.1, 1.9)); break;
      case 2: reference::solarize(image, static_cast<int>(rng.below(256))); break;
      default: reference::autocontrast(image); break;
    }
  }
  if (rng.bernoulli(o.grayscaleProbability)) reference::grayscale(image);
  if (rng.bernoulli(o.flipProbability)) reference::flipHorizontal(image);
}

void normalizeInto(const Image& image, float* chw) {
  const int64_t plane = image.height * image.width;
  for (int64_t i = 0; i < plane; ++i) {
    for (int c = 0; c < 3; ++c) chw[c * plane + i] = (image.pixels[i * 3 + c] / 255.0f - kMean[c]) / kStd[c];
  }
}

Batch makeBatch(const at::Tensor& source, const at::Tensor& rows, const at::Tensor& sampleIndices, uint64_t seed,
                uint64_t epoch, const SamplerConfig& config) {
  const int64_t B = rows.size(0), S = config.imageSize, J = config.jigsawSize, P = config.patchSize;
  Batch batch{at::empty({B, 3, S, S}, at::kFloat), at::empty({B, kJigsawPatches, 3, P, P}, at::kFloat),
              at::empty({B, kJigsawPatches}, at::kLong)};
  const at::Tensor src = source.contiguous();
  const int64_t h = src.size(1), w = src.size(2), c = src.size(3);
  const int64_t* rowPtr = rows.data_ptr<int64_t>();
  const int64_t* indexPtr = sampleIndices.data_ptr<int64_t>();
  float* images = batch.images.data_ptr<float>();
  float* patches = batch.patches.data_ptr<float>();
  int64_t* perms = batch.permutations.data_ptr<int64_t>();
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      SampleRng rng(seed, epoch, static_cast<uint64_t>(indexPtr[b]));
      const ImageView view{src.data_ptr<uint8_t>() + rowPtr[b] * h * w * c, h, w, c};
      Image image = reference::cropResize(view, randomResizedCropBox(rng, w, h, config.imageScaleMin, config.imageScaleMax), S);
      reference::photometric(image, rng, config.photometric);
      reference::normalizeInto(image, images + b * 3 * S * S);
      const Image jigsaw = reference::cropResize(view, randomResizedCropBox(rng, w, h, config.jigsawScaleMin, config.jigsawScaleMax), J);
      const int64_t cell = J / kJigsawCells;
      std::array<int64_t, kJigsawPatches> order;
      std::iota(order.begin(), order.end(), 0);
      std::shuffle(order.begin(), order.end(), rng.engine());
      for (int64_t k = 0; k < kJigsawPatches; ++k) {
        const int64_t ox = rng.below(cell - P + 1), oy = rng.below(cell - P + 1);
        Image patch = crop(jigsaw, (order[k] % kJigsawCells) * cell + ox, (order[k] / kJigsawCells) * cell + oy, P);
        reference::photometric(patch, rng, config.photometric);
        reference::normalizeInto(patch, patches + (b * kJigsawPatches + k) * 3 * P * P);
        perms[b * kJigsawPatches + k] = order[k];
      }
    }
  });
  return batch;
}

}  // namespace pirl::data::reference
