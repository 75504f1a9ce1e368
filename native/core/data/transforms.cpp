#include "transforms.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <numeric>
#include <utility>

// Speed (bench/sampler_bench.cpp, `npm run bench:data`): every op is one pass over 8-bit pixels with
// per-image lookup tables where the result depends on one channel value alone, integer luma, and
// float arithmetic in vectorisable blocks where it does not; results match the double-precision
// reference (test/native/reference) exactly or within one grey level (test/native/sampler_test.cpp).
namespace pirl::data {

namespace {

std::atomic<bool> baselineForced{false};

// Each op's body is compiled twice, for baseline x86-64 (all a prebuilt binary may assume) and for AVX2,
// whose 8-float vectors make an op 1.6–4× faster (bench:data); the CPU picks one at run time. An op whose
// vector form is slower than scalar code on 4-float SSE2 (hue) names its own baseline body.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PIRL_PIXEL_BODY inline __attribute__((always_inline))

template <auto Body, typename... Args>
__attribute__((target("avx2"))) void runAvx2(Args&&... args) {
  Body(std::forward<Args>(args)...);
}

bool useAvx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has && !baselineForced.load(std::memory_order_relaxed);
}

template <auto Body, auto BaselineBody = Body, typename... Args>
void dispatch(Args&&... args) {
  if (useAvx2()) return runAvx2<Body>(std::forward<Args>(args)...);
  BaselineBody(std::forward<Args>(args)...);
}
#else
#define PIRL_PIXEL_BODY inline

bool useAvx2() { return false; }

// Elsewhere (ARM) the measured scalar bodies.
template <auto Body, auto BaselineBody = Body, typename... Args>
void dispatch(Args&&... args) {
  BaselineBody(std::forward<Args>(args)...);
}
#endif

// Round half up and clamp to [0, 255]: std::round of a non-negative value, without a libm call.
inline uint8_t round8(double v) { return static_cast<uint8_t>(std::min(255.0, std::max(0.0, v)) + 0.5); }
// The same as a float, so that loops of it vectorise.
inline float roundLevel(float v) { return static_cast<float>(static_cast<int32_t>(std::min(255.0f, std::max(0.0f, v)) + 0.5f)); }
inline uint8_t round8(float v) { return static_cast<uint8_t>(roundLevel(v)); }

// ITU-R 601-2 luma ×1000 (PIL's and torchvision's grayscale weights), exact in integers.
inline int32_t luma1000(const uint8_t* p) { return 299 * p[0] + 587 * p[1] + 114 * p[2]; }

using Lut = std::array<uint8_t, 256>;

template <typename Fn>
Lut makeLut(Fn&& fn) {
  Lut lut;
  for (int v = 0; v < 256; ++v) lut[v] = fn(v);
  return lut;
}

PIRL_PIXEL_BODY void applyLut(Image& image, const Lut& lut) {
  for (auto& v : image.pixels) v = lut[v];
}

// Ops whose result mixes channels run on blocks of pixels copied out to three float planes, where
// their loops vectorise (interleaved RGB bytes do not); `kernel` leaves whole numbers in [0, 255].
constexpr int kBlock = 64;
struct Planes {
  alignas(32) float r[kBlock], g[kBlock], b[kBlock];
};

template <typename Kernel>
PIRL_PIXEL_BODY void inFloatBlocks(Image& image, Kernel&& kernel) {
  // Lanes past the image's end in a last, short block hold zeros or the block before's values: whole levels,
  // computed on and never written back.
  Planes planes{};
  const int64_t n = image.height * image.width;
  for (int64_t start = 0; start < n; start += kBlock) {
    const int m = static_cast<int>(std::min<int64_t>(kBlock, n - start));
    uint8_t* q = image.pixels.data() + start * 3;
    for (int j = 0; j < m; ++j) planes.r[j] = q[3 * j], planes.g[j] = q[3 * j + 1], planes.b[j] = q[3 * j + 2];
    kernel(planes);
    for (int j = 0; j < m; ++j) {
      q[3 * j] = static_cast<uint8_t>(static_cast<int32_t>(planes.r[j]));
      q[3 * j + 1] = static_cast<uint8_t>(static_cast<int32_t>(planes.g[j]));
      q[3 * j + 2] = static_cast<uint8_t>(static_cast<int32_t>(planes.b[j]));
    }
  }
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

inline Tap tapAt(double start, double length, int64_t size, int64_t i, int64_t extent) {
  const double f = std::clamp(start + (i + 0.5) * (length / size) - 0.5, 0.0, static_cast<double>(extent - 1));
  const int64_t lo = static_cast<int64_t>(f);
  return {lo, std::min(lo + 1, extent - 1), f - lo};
}

PIRL_PIXEL_BODY void cropResizeBody(Image& out, const ImageView& src, const Box& box, int64_t size, int64_t x0, int64_t y0) {
  const int64_t width = out.width, height = out.height, C = src.channels;
  std::vector<Tap> columns(width);
  for (int64_t x = 0; x < width; ++x) columns[x] = tapAt(box.x, box.width, size, x0 + x, src.width);
  // Separable: each needed source row is interpolated horizontally once, then pairs of rows vertically
  // (the reference's order of operations, in the same double arithmetic).
  std::vector<double> rowA(width * 3), rowB(width * 3);
  int64_t rowAIndex = -1, rowBIndex = -1;
  const auto horizontal = [&](int64_t sy, std::vector<double>& row) __attribute__((always_inline)) {
    const uint8_t* line = src.data + sy * src.width * C;
    if (C == 1) {  // gray sources become RGB here
      for (int64_t x = 0; x < width; ++x) {
        const Tap& t = columns[x];
        row[x * 3] = row[x * 3 + 1] = row[x * 3 + 2] = line[t.lo] * (1 - t.w) + line[t.hi] * t.w;
      }
      return;
    }
    for (int64_t x = 0; x < width; ++x) {
      const Tap& t = columns[x];
      const uint8_t *lo = line + t.lo * 3, *hi = line + t.hi * 3;
      for (int c = 0; c < 3; ++c) row[x * 3 + c] = lo[c] * (1 - t.w) + hi[c] * t.w;
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
}

PIRL_PIXEL_BODY void brightnessBody(Image& image, double factor) {
  applyLut(image, makeLut([&](int v) { return round8(v * factor); }));
}

PIRL_PIXEL_BODY void contrastBody(Image& image, double factor) {
  int64_t sum = 0;
  const uint8_t* p = image.pixels.data();
  for (size_t i = 0; i < image.pixels.size(); i += 3) sum += luma1000(p + i);
  const double mean = std::round(static_cast<double>(sum) / 1000.0 / static_cast<double>(image.height * image.width));
  applyLut(image, makeLut([&](int v) { return round8(mean + factor * (v - mean)); }));
}

PIRL_PIXEL_BODY void saturationBody(Image& image, double factor) {
  const float f = static_cast<float>(factor);
  const float g = (1 - f) / 1000.0f;
  inFloatBlocks(image, [&](Planes& p) __attribute__((always_inline)) {
    for (int j = 0; j < kBlock; ++j) {
      const float gray = g * (299.0f * p.r[j] + 587.0f * p.g[j] + 114.0f * p.b[j]);  // (1 − f)·luma; exact sums
      p.r[j] = roundLevel(gray + f * p.r[j]);
      p.g[j] = roundLevel(gray + f * p.g[j]);
      p.b[j] = roundLevel(gray + f * p.b[j]);
    }
  });
}

// Eight floats, written as vector expressions: hue's per-pixel branches become selects.
using Float8 = float __attribute__((vector_size(32)));
using Int8 = int32_t __attribute__((vector_size(32)));

PIRL_PIXEL_BODY void hueBody(Image& image, double shift) {
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

PIRL_PIXEL_BODY void hueVectorBody(Image& image, double shift) {
  // hueBody's arithmetic, its branches as selects over eight pixels.
  const float turn = static_cast<float>(6 * (shift - std::floor(shift)));  // in sixths, [0, 6)
  const Float8 zero{}, one = zero + 1, five = zero + 5, level255 = zero + 255;
  const auto maxOf = [](Float8 a, Float8 b) __attribute__((always_inline)) { return a > b ? a : b; };
  const auto minOf = [](Float8 a, Float8 b) __attribute__((always_inline)) { return a < b ? a : b; };
  const auto round = [&](Float8 v) __attribute__((always_inline)) {
    return __builtin_convertvector(__builtin_convertvector(minOf(maxOf(v, zero), level255) + 0.5f, Int8), Float8);
  };
  inFloatBlocks(image, [&](Planes& p) __attribute__((always_inline)) {
    for (int j = 0; j < kBlock; j += 8) {
      Float8 r, g, b;
      std::memcpy(&r, p.r + j, sizeof r), std::memcpy(&g, p.g + j, sizeof g), std::memcpy(&b, p.b + j, sizeof b);
      const Float8 mx = maxOf(r, maxOf(g, b)), mn = minOf(r, minOf(g, b)), d = mx - mn;
      const Float8 inv = one / (d > 0 ? d : one);  // gray (d = 0): every channel stays min = max
      Float8 h = mx == r ? (g - b) * inv : mx == g ? (b - r) * inv + 2 : (r - g) * inv + 4;
      h += turn;
      h = h < 0 ? h + 6 : h;
      h = h >= 6 ? h - 6 : h;
      const Float8 sector = minOf(__builtin_convertvector(__builtin_convertvector(h, Int8), Float8), five);
      const Float8 up = round(mn + d * (h - sector)), down = round(mx - d * (h - sector));
      r = ((sector == 0) | (sector == 5)) ? mx : sector == 1 ? down : sector == 4 ? up : mn;
      g = ((sector == 1) | (sector == 2)) ? mx : sector == 0 ? up : sector == 3 ? down : mn;
      b = ((sector == 3) | (sector == 4)) ? mx : sector == 2 ? up : sector == 5 ? down : mn;
      std::memcpy(p.r + j, &r, sizeof r), std::memcpy(p.g + j, &g, sizeof g), std::memcpy(p.b + j, &b, sizeof b);
    }
  });
}

PIRL_PIXEL_BODY void posterizeBody(Image& image, int bits) {
  const uint8_t mask = static_cast<uint8_t>(0xFF << (8 - bits));
  for (auto& v : image.pixels) v &= mask;
}

PIRL_PIXEL_BODY void solarizeBody(Image& image, int threshold) {
  for (auto& v : image.pixels) v = v >= threshold ? static_cast<uint8_t>(255 - v) : v;
}

PIRL_PIXEL_BODY void autocontrastBody(Image& image) {
  // Each channel's extremes: in 48-byte steps (16 pixels) a channel stays in the same lanes, so the
  // lane-wise min and max vectorise; the lanes are folded per channel after.
  std::array<uint8_t, 3> lo{255, 255, 255}, hi{0, 0, 0};
  {
    uint8_t lanesLo[48], lanesHi[48];
    std::memset(lanesLo, 255, 48), std::memset(lanesHi, 0, 48);
    const uint8_t* __restrict p = image.pixels.data();  // bytes may alias the lanes as far as the compiler knows
    const size_t n = image.pixels.size(), whole = n - n % 48;
    for (size_t i = 0; i < whole; i += 48) {
      for (int k = 0; k < 48; ++k) {
        const uint8_t v = p[i + k];
        lanesLo[k] = v < lanesLo[k] ? v : lanesLo[k];
        lanesHi[k] = v > lanesHi[k] ? v : lanesHi[k];
      }
    }
    for (int k = 0; k < 48; ++k) lo[k % 3] = std::min(lo[k % 3], lanesLo[k]), hi[k % 3] = std::max(hi[k % 3], lanesHi[k]);
    for (size_t i = whole; i < n; i += 3) {
      for (int c = 0; c < 3; ++c) lo[c] = std::min(lo[c], p[i + c]), hi[c] = std::max(hi[c], p[i + c]);
    }
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

PIRL_PIXEL_BODY void sharpnessBody(Image& image, double factor) {
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

PIRL_PIXEL_BODY void grayscaleBody(Image& image) {
  uint8_t* p = image.pixels.data();
  for (size_t i = 0; i < image.pixels.size(); i += 3) {
    p[i] = p[i + 1] = p[i + 2] = static_cast<uint8_t>((luma1000(p + i) + 500) / 1000);
  }
}

PIRL_PIXEL_BODY void flipBody(Image& image) {
  for (int64_t y = 0; y < image.height; ++y) {
    for (int64_t x = 0; x < image.width / 2; ++x) {
      std::swap_ranges(image.at(y, x), image.at(y, x) + 3, image.at(y, image.width - 1 - x));
    }
  }
}

PIRL_PIXEL_BODY void normalizeBody(const Image& image, float* chw) {
  const auto& table = normalizeTable();
  const int64_t plane = image.height * image.width;
  const uint8_t* p = image.pixels.data();
  for (int c = 0; c < 3; ++c) {
    float* out = chw + c * plane;
    for (int64_t i = 0; i < plane; ++i) out[i] = table[c][p[i * 3 + c]];
  }
}

}  // namespace

const char* pixelOpsIsa() { return useAvx2() ? "avx2" : "baseline"; }

void forceBaselinePixelOps(bool force) { baselineForced.store(force, std::memory_order_relaxed); }

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
  dispatch<cropResizeBody>(out, src, box, size, x0, y0);
  return out;
}

void adjustBrightness(Image& image, double factor) { dispatch<brightnessBody>(image, factor); }
void adjustContrast(Image& image, double factor) { dispatch<contrastBody>(image, factor); }
void adjustSaturation(Image& image, double factor) { dispatch<saturationBody>(image, factor); }
void adjustHue(Image& image, double shift) { dispatch<hueVectorBody, hueBody>(image, shift); }
void posterize(Image& image, int bits) { dispatch<posterizeBody>(image, bits); }
void solarize(Image& image, int threshold) { dispatch<solarizeBody>(image, threshold); }
void autocontrast(Image& image) { dispatch<autocontrastBody>(image); }
void sharpness(Image& image, double factor) { dispatch<sharpnessBody>(image, factor); }
void grayscale(Image& image) { dispatch<grayscaleBody>(image); }
void flipHorizontal(Image& image) { dispatch<flipBody>(image); }
void normalizeInto(const Image& image, float* chw) { dispatch<normalizeBody>(image, chw); }

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

}  // namespace pirl::data
