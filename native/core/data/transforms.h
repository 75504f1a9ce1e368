// PIRL's augmentations (docs/PIRL.md, "Data") on 8-bit RGB images, in C++: the crops, colour
// jitter, photometric ops, grayscale and flip of both branches, and the final normalisation.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "sample_rng.h"

namespace pirl::data {

// The per-channel mean and std every transform normalises RGB in [0, 1] by (ImageNet's, as torchvision's models
// expect); TypeScript reads them from the addon (preview, the exported trunk's metadata).
inline constexpr std::array<double, 3> kImageNetMean{0.485, 0.456, 0.406};
inline constexpr std::array<double, 3> kImageNetStd{0.229, 0.224, 0.225};

// An 8-bit HWC RGB image that owns its pixels.
struct Image {
  int64_t height = 0, width = 0;
  std::vector<uint8_t> pixels;  // height·width·3
  Image() = default;
  Image(int64_t h, int64_t w) : height(h), width(w), pixels(static_cast<size_t>(h * w * 3)) {}
  uint8_t* at(int64_t y, int64_t x) { return pixels.data() + (y * width + x) * 3; }
  const uint8_t* at(int64_t y, int64_t x) const { return pixels.data() + (y * width + x) * 3; }
};

// A view of an 8-bit HWC source image with 1 (gray) or 3 (RGB) channels.
struct ImageView {
  const uint8_t* data;
  int64_t height, width, channels;
};

struct Box {
  double x, y, width, height;
};

// torchvision's RandomResizedCrop box: area fraction in [scaleMin, scaleMax], aspect ratio in
// [3/4, 4/3] (log-uniform), 10 tries, then the largest centred box of an allowed ratio.
Box randomResizedCropBox(SampleRng& rng, int64_t width, int64_t height, double scaleMin, double scaleMax);

// The box of `src` resampled to size×size RGB (bilinear, pixel centres aligned).
Image cropResize(const ImageView& src, const Box& box, int64_t size);

// The width×height window at (x, y) of cropResize(src, box, size), computing only its pixels.
Image cropResizeWindow(const ImageView& src, const Box& box, int64_t size, int64_t x, int64_t y, int64_t width,
                       int64_t height);

struct ColorJitter {
  double brightness, contrast, saturation, hue;
};

// What the photometric step applies (with photometricProbability): One — one of posterize, sharpness,
// solarize, autocontrast, drawn; All — the four in turn, as VISSL's PIRL (ImgPilRandomPhotometric).
enum class PhotometricOps { One, All };

struct PhotometricOptions {
  ColorJitter jitter;
  double photometricProbability;
  double grayscaleProbability;
  double flipProbability;
  PhotometricOps photometricOps;
};

// Colour jitter (torchvision's: the four adjustments in random order, factors uniform), then with the
// options' probabilities the photometric op(s), grayscale, and a horizontal flip; in place.
void photometric(Image& image, SampleRng& rng, const PhotometricOptions& options);

// Which compiled build of the pixel ops runs: "avx2" where the CPU has AVX2, else "baseline".
const char* pixelOpsIsa();
// Tests and benchmarks: run the baseline build even where AVX2 is present (true), or choose by CPU (false).
void forceBaselinePixelOps(bool force);

// The individual operations (exposed for tests).
void adjustBrightness(Image& image, double factor);
void adjustContrast(Image& image, double factor);
void adjustSaturation(Image& image, double factor);
void adjustHue(Image& image, double shift);  // shift in [−0.5, 0.5] of a full turn
void posterize(Image& image, int bits);
void solarize(Image& image, int threshold);
void autocontrast(Image& image);
void sharpness(Image& image, double factor);
void grayscale(Image& image);
void flipHorizontal(Image& image);

// (x/255 − mean)/std into a float CHW buffer (ImageNet mean and std).
void normalizeInto(const Image& image, float* chw);

}  // namespace pirl::data
