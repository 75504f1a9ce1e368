#include "transforms.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <numeric>

// Speed (bench/sampler_bench.cpp, `npm run bench:data`): every op is one pass over 8-bit pixels with
// per-image lookup tables where the result depends on one channel value alone, integer luma, and
// float arithmetic where it does not; results match the double-precision reference
// (test/native/reference) exactly or within one grey level (test/native/sampler_test.cpp).
namespace pirl::data {

namespace {

// Round half up and clamp to [0, 255]: std::round of a non-negative value, without a libm call.
inline uint8_t round8(double v) { return static_cast<uint8_t>(std::min(255.0, std::max(0.0, v)) + 0.5); }
inline uint8_t round8(float v) { return static_cast<uint8_t>(std::min(255.0f, std::max(0.0f, v)) + 0.5f); }

// ITU-R 601-2 luma ×1000 (PIL's and torchvision's grayscale weights), exact in integers.
inline int32_t luma1000(const uint8_t* p) { return 299 * p[0] + 587 * p[1] + 114 * p[2]; }

using Lut = std::array<uint8_t, 256>;

template <typename Fn>
Lut makeLut(Fn&& fn) {
  Lut lut;
  for (int v = 0; v < 256; ++v) lut[v] = fn(v);
  return lut;
}

void applyLut(Image& image, const Lut& lut) {
  for (auto& v : image.pixels) v = lut[v];
}

// (v/255 − mean)/std for every byte value and channel, computed as the reference computes it.
const std::array<std::array<float, 256>, 3>& normalizeTable() {
  static const auto table = [] {
    std::array<std::array<float, 256>, 3> t{};
    for (int c = 0; c < 3; ++c) {
      for (int v = 0; v < 256; ++v) t[c][v] = (v / 255.0f - static_cast<float>(kImageNetMean[c])) / static_cast<float>(kImageNetStd[c]);
    }
    return t;
  }();
  return table;
}

// Where output column (or row) i of a resize of [start, start+length) to `size` samples the source:
// the two neighbours and the weight of the second, pixel centres aligned, clamped at the edges.
struct Tap {
  int64_t lo, hi;
  double w;
};

Tap tapAt(double start, double length, int64_t size, int64_t i, int64_t extent) {
  const double f = std::clamp(start + (i + 0.5) * (length / size) - 0.5, 0.0, static_cast<double>(extent - 1));
  const int64_t lo = static_cast<int64_t>(f);
  return {lo, std::min(lo + 1, extent - 1), f - lo};
}

}  // namespace

Box randomResizedCropBox(SampleRng& rng, int64_t width, int64_t height, double scaleMin, double scaleMax) {
  const double area = static_cast<double>(width * height);
  const double logLo = std::log(3.0 / 4.0), logHi = std::log(4.0 / 3.0);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * rng.uniform(scaleMin, scaleMax);
    const double ratio = std::exp(rng.uniform(logLo, logHi));
    const double w = std::round(std::sqrt(target * ratio)), h = std::round(std::sqrt(target / ratio));
    if (w > 0 && h > 0 && w <= width && h <= height) {
      const double x = static_cast<double>(rng.below(static_cast<int64_t>(width - w) + 1));
      const double y = static_cast<double>(rng.below(static_cast<int64_t>(height - h) + 1));
      return {x, y, w, h};
    }
  }
  // Fallback: the whole image clipped to the nearest allowed ratio, centred.
  const double ratio = static_cast<double>(width) / height;
  double w = width, h = height;
  if (ratio < 3.0 / 4.0) h = std::round(w / (3.0 / 4.0));
  if (ratio > 4.0 / 3.0) w = std::round(h * (4.0 / 3.0));
  return {(width - w) / 2, (height - h) / 2, w, h};
}

Image cropResize(const ImageView& src, const Box& box, int64_t size) {
  return cropResizeWindow(src, box, size, 0, 0, size, size);
}

Image cropResizeWindow(const ImageView& src, const Box& box, int64_t size, int64_t x0, int64_t y0, int64_t width,
                       int64_t height) {
  Image out(height, width);
  const int64_t C = src.channels;
  std::vector<Tap> columns(width);
  for (int64_t x = 0; x < width; ++x) columns[x] = tapAt(box.x, box.width, size, x0 + x, src.width);
  // Separable: each needed source row is interpolated horizontally once, then pairs of rows vertically
  // (the reference's order of operations, in the same double arithmetic).
  std::vector<double> rowA(width * 3), rowB(width * 3);
  int64_t rowAIndex = -1, rowBIndex = -1;
  const auto horizontal = [&](int64_t sy, std::vector<double>& row) {
    const uint8_t* line = src.data + sy * src.width * C;
    for (int64_t x = 0; x < width; ++x) {
      const Tap& t = columns[x];
      for (int c = 0; c < 3; ++c) {
        const int64_t sc = C == 1 ? 0 : c;  // gray sources become RGB here
        row[x * 3 + c] = line[t.lo * C + sc] * (1 - t.w) + line[t.hi * C + sc] * t.w;
      }
    }
  };
  for (int64_t y = 0; y < height; ++y) {
    const Tap r = tapAt(box.y, box.height, size, y0 + y, src.height);
    // Consecutive output rows share source rows: keep the two interpolated last.
    if (rowAIndex != r.lo) {
      if (rowBIndex == r.lo) {
        std::swap(rowA, rowB);
        std::swap(rowAIndex, rowBIndex);
      } else {
        horizontal(r.lo, rowA);
        rowAIndex = r.lo;
      }
    }
    if (rowBIndex != r.hi) {
      horizontal(r.hi, rowB);
      rowBIndex = r.hi;
    }
    uint8_t* o = out.at(y, 0);
    for (int64_t i = 0; i < width * 3; ++i) o[i] = round8(rowA[i] * (1 - r.w) + rowB[i] * r.w);
  }
  return out;
}

void adjustBrightness(Image& image, double factor) {
  applyLut(image, makeLut([&](int v) { return round8(v * factor); }));
}

void adjustContrast(Image& image, double factor) {
  int64_t sum = 0;
  const uint8_t* p = image.pixels.data();
  for (size_t i = 0; i < image.pixels.size(); i += 3) sum += luma1000(p + i);
  const double mean = std::round(static_cast<double>(sum) / 1000.0 / static_cast<double>(image.height * image.width));
  applyLut(image, makeLut([&](int v) { return round8(mean + factor * (v - mean)); }));
}

void adjustSaturation(Image& image, double factor) {
  const float f = static_cast<float>(factor);
  const float g = (1 - f) / 1000.0f;
  uint8_t* p = image.pixels.data();
  for (size_t i = 0; i < image.pixels.size(); i += 3) {
    const float gray = g * static_cast<float>(luma1000(p + i));  // (1 − f)·luma
    for (int c = 0; c < 3; ++c) p[i + c] = round8(gray + f * p[i + c]);
  }
}

void adjustHue(Image& image, double shift) {
  // HSV rotation with V and S kept: each channel becomes max, min, or min + d·f / max − d·f where
  // d = max − min and f the position of the rotated hue within its sixth of the circle.
  static const auto inverse = [] {
    std::array<float, 256> t{};
    for (int d = 1; d < 256; ++d) t[d] = 1.0f / d;
    return t;
  }();
  const float turn = static_cast<float>(6 * (shift - std::floor(shift)));  // in sixths, [0, 6)
  uint8_t* p = image.pixels.data();
  for (size_t i = 0; i < image.pixels.size(); i += 3) {
    const int r = p[i], g = p[i + 1], b = p[i + 2];
    const int mx = std::max({r, g, b}), mn = std::min({r, g, b}), d = mx - mn;
    if (d == 0) continue;  // gray: no hue to turn
    const float inv = inverse[d];
    float h = mx == r ? (g - b) * inv : mx == g ? (b - r) * inv + 2 : (r - g) * inv + 4;
    h += turn;
    if (h < 0) h += 6;
    if (h >= 6) h -= 6;
    const int sector = std::min(static_cast<int>(h), 5);
    const float up = mn + d * (h - sector), down = mx - d * (h - sector);
    const uint8_t hi = static_cast<uint8_t>(mx), lo = static_cast<uint8_t>(mn), u = round8(up), dn = round8(down);
    switch (sector) {
      case 0: p[i] = hi, p[i + 1] = u, p[i + 2] = lo; break;
      case 1: p[i] = dn, p[i + 1] = hi, p[i + 2] = lo; break;
      case 2: p[i] = lo, p[i + 1] = hi, p[i + 2] = u; break;
      case 3: p[i] = lo, p[i + 1] = dn, p[i + 2] = hi; break;
      case 4: p[i] = u, p[i + 1] = lo, p[i + 2] = hi; break;
      default: p[i] = hi, p[i + 1] = lo, p[i + 2] = dn; break;
    }
  }
}

void posterize(Image& image, int bits) {
  const uint8_t mask = static_cast<uint8_t>(0xFF << (8 - bits));
  for (auto& v : image.pixels) v &= mask;
}

void solarize(Image& image, int threshold) {
  for (auto& v : image.pixels) v = v >= threshold ? static_cast<uint8_t>(255 - v) : v;
}

void autocontrast(Image& image) {
  std::array<uint8_t, 3> lo{255, 255, 255}, hi{0, 0, 0};
  const uint8_t* p = image.pixels.data();
  for (size_t i = 0; i < image.pixels.size(); i += 3) {
    for (int c = 0; c < 3; ++c) lo[c] = std::min(lo[c], p[i + c]), hi[c] = std::max(hi[c], p[i + c]);
  }
  std::array<Lut, 3> luts;
  for (int c = 0; c < 3; ++c) {
    const double scale = hi[c] > lo[c] ? 255.0 / (hi[c] - lo[c]) : 0;
    luts[c] = makeLut([&](int v) { return hi[c] > lo[c] ? round8((v - lo[c]) * scale) : static_cast<uint8_t>(v); });
  }
  uint8_t* q = image.pixels.data();
  for (size_t i = 0; i < image.pixels.size(); i += 3) {
    for (int c = 0; c < 3; ++c) q[i + c] = luts[c][q[i + c]];
  }
}

void sharpness(Image& image, double factor) {
  // PIL's SMOOTH kernel [[1,1,1],[1,5,1],[1,1,1]]/13 on the interior, blended with the image; the border
  // stays as it is (there the blend is the identity). Integer sums, rounded as the reference rounds.
  const int64_t W = image.width, rowBytes = W * 3;
  if (image.height < 3 || W < 3) return;
  // Row by row, in place: the rows above and at y as they were (two rows kept, not the image), and each
  // column's sum of three rows once, shared by the three windows that take it (1.9× at 224 px).
  std::vector<uint8_t> above(image.at(0, 0), image.at(0, 0) + rowBytes), row(rowBytes);
  std::vector<int32_t> column(rowBytes);
  for (int64_t y = 1; y + 1 < image.height; ++y) {
    uint8_t* o = image.at(y, 0);
    const uint8_t* below = image.at(y + 1, 0);
    std::memcpy(row.data(), o, rowBytes);
    for (int64_t i = 0; i < rowBytes; ++i) column[i] = above[i] + row[i] + below[i];
    for (int64_t i = 3; i < rowBytes - 3; ++i) {
      const int32_t sum = column[i - 3] + column[i] + column[i + 3] + 4 * row[i];
      const int32_t smooth = (2 * sum + 13) / 26;  // round(sum/13): 13 is odd, so no ties
      o[i] = round8(smooth + factor * (row[i] - smooth));  // the reference's double arithmetic
    }
    above.swap(row);
  }
}

void grayscale(Image& image) {
  uint8_t* p = image.pixels.data();
  for (size_t i = 0; i < image.pixels.size(); i += 3) {
    p[i] = p[i + 1] = p[i + 2] = static_cast<uint8_t>((luma1000(p + i) + 500) / 1000);
  }
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
    if (op == 0) adjustBrightness(image, b);
    if (op == 1) adjustContrast(image, c);
    if (op == 2) adjustSaturation(image, s);
    if (op == 3) adjustHue(image, h);
  }
  if (rng.bernoulli(o.photometricProbability)) {
    // VISSL's ranges: posterize 4..8 bits, sharpness 0.1–1.9, solarize at 0..256 (256: none; One: 0..255).
    const auto posterized = [&] { posterize(image, static_cast<int>(4 + rng.below(5))); };
    const auto sharpened = [&] { sharpness(image, rng.uniform(0.1, 1.9)); };
    if (o.photometricOps == PhotometricOps::All) {
      posterized();
      sharpened();
      solarize(image, static_cast<int>(rng.below(257)));
      autocontrast(image);
    } else {
      switch (rng.below(4)) {
        case 0: posterized(); break;
        case 1: sharpened(); break;
        case 2: solarize(image, static_cast<int>(rng.below(256))); break;
        default: autocontrast(image); break;
      }
    }
  }
  if (rng.bernoulli(o.grayscaleProbability)) grayscale(image);
  if (rng.bernoulli(o.flipProbability)) flipHorizontal(image);
}

void normalizeInto(const Image& image, float* chw) {
  const auto& table = normalizeTable();
  const int64_t plane = image.height * image.width;
  const uint8_t* p = image.pixels.data();
  for (int c = 0; c < 3; ++c) {
    float* out = chw + c * plane;
    for (int64_t i = 0; i < plane; ++i) out[i] = table[c][p[i * 3 + c]];
  }
}

}  // namespace pirl::data
