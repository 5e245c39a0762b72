#include "ember/nn/data/colormap.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ember/engine/error.h"

namespace ember::data {

namespace {

// Images built from caller-given sizes stay below this many pixels, so a swapped or garbage
// argument gives a clear error instead of an attempt to allocate gigabytes.
constexpr int64_t kMaxPixels = int64_t(1) << 28;

struct OkLab {
  double L, a, b;
};

// OKLab (Ottosson 2020) -> linear sRGB. OKLab is built so that equal steps are seen as about
// equal changes, and its L tracks perceived lightness, which is what a sequential map needs.
std::array<double, 3> oklab_to_linear_srgb(const OkLab& c) {
  double l = c.L + 0.3963377774 * c.a + 0.2158037573 * c.b;
  double m = c.L - 0.1055613458 * c.a - 0.0638541728 * c.b;
  double s = c.L - 0.0894841775 * c.a - 1.2914855480 * c.b;
  l = l * l * l;
  m = m * m * m;
  s = s * s * s;
  return {+4.0767416621 * l - 3.3077115913 * m + 0.2309699292 * s,
          -1.2684380046 * l + 2.6097574011 * m - 0.3413193965 * s,
          -0.0041960863 * l - 0.7034186147 * m + 1.7076147010 * s};
}

uint8_t linear_to_srgb8(double v) {
  v = std::clamp(v, 0.0, 1.0);
  double e = v <= 0.0031308 ? 12.92 * v : 1.055 * std::pow(v, 1.0 / 2.4) - 0.055;
  return uint8_t(std::lround(e * 255.0));
}

// The anchors as lightness, chroma, hue (degrees). Lightness rises in equal steps; hue turns
// from purple through blue, teal and green to yellow; chroma is as high as the sRGB gamut
// allows along the whole path (every interpolated colour is inside it, so no clipping bends
// the lightness curve).
constexpr double kAnchors[][3] = {
    {0.26, 0.105, 300.0},  // dark blue-purple
    {0.42, 0.120, 265.0},  // blue
    {0.58, 0.095, 200.0},  // teal
    {0.74, 0.150, 145.0},  // green
    {0.93, 0.175, 105.0},  // yellow
};
constexpr int kNumAnchors = int(sizeof(kAnchors) / sizeof(kAnchors[0]));

// The map is tabulated once: 1024 steps are finer than 8-bit output can show, and a table
// lookup keeps megapixel heat maps cheap.
constexpr int kTableSize = 1024;

std::array<std::array<uint8_t, 3>, kTableSize> build_table() {
  OkLab anchors[kNumAnchors];
  for (int k = 0; k < kNumAnchors; ++k) {
    double hue = kAnchors[k][2] * (3.14159265358979323846 / 180.0);
    anchors[k] = {kAnchors[k][0], kAnchors[k][1] * std::cos(hue), kAnchors[k][1] * std::sin(hue)};
  }
  std::array<std::array<uint8_t, 3>, kTableSize> table{};
  for (int i = 0; i < kTableSize; ++i) {
    double pos = double(i) / (kTableSize - 1) * (kNumAnchors - 1);
    int k = std::min(int(pos), kNumAnchors - 2);
    double f = pos - k;
    const OkLab &p = anchors[k], &q = anchors[k + 1];
    OkLab c{p.L + f * (q.L - p.L), p.a + f * (q.a - p.a), p.b + f * (q.b - p.b)};
    auto rgb = oklab_to_linear_srgb(c);
    table[i] = {linear_to_srgb8(rgb[0]), linear_to_srgb8(rgb[1]), linear_to_srgb8(rgb[2])};
  }
  return table;
}

constexpr std::array<uint8_t, 3> kMissing = {128, 128, 128};

void put(Image& img, size_t pixel, const std::array<uint8_t, 3>& rgb) {
  std::copy(rgb.begin(), rgb.end(), img.pixels.begin() + pixel * 3);
}

Image blank_rgb(int width, int height, const char* op) {
  EMBER_CHECK(width > 0 && height > 0, op, ": image size must be positive, got ", width, " x ", height);
  EMBER_CHECK(int64_t(width) * height <= kMaxPixels, op, ": ", width, " x ", height, " is more than the ",
              kMaxPixels, " pixels allowed");
  Image img;
  img.width = width;
  img.height = height;
  img.channels = 3;
  img.pixels.assign(size_t(width) * size_t(height) * 3, 0);
  return img;
}

}  // namespace

std::array<uint8_t, 3> colormap(double t) {
  static const auto table = build_table();  // thread-safe one-time initialisation
  if (std::isnan(t)) return kMissing;
  t = std::clamp(t, 0.0, 1.0);
  return table[size_t(std::lround(t * (kTableSize - 1)))];
}

Image heatmap(const std::vector<double>& values, int width, int height, bool log_scale) {
  Image img = blank_rgb(width, height, "heatmap");
  EMBER_CHECK(values.size() == size_t(width) * size_t(height), "heatmap: got ", values.size(), " values for a ",
              width, " x ", height, " image (expected ", size_t(width) * size_t(height), ")");
  // In log scale, values <= 0 have no logarithm; they are drawn with the lowest colour.
  auto mapped = [&](double v) { return log_scale ? (v > 0 ? std::log(v) : -INFINITY) : v; };
  double lo = INFINITY, hi = -INFINITY;
  for (double v : values) {
    double m = mapped(v);
    if (std::isfinite(v) && std::isfinite(m)) {
      lo = std::min(lo, m);
      hi = std::max(hi, m);
    }
  }
  for (size_t i = 0; i < values.size(); ++i) {
    double v = values[i], m = mapped(v);
    double t;
    if (!std::isfinite(v)) t = NAN;
    else if (!std::isfinite(m)) t = 0.0;  // non-positive value in log scale
    else if (hi > lo) t = (m - lo) / (hi - lo);
    else t = 0.5;  // a constant field has no range to spread over
    put(img, i, colormap(t));
  }
  return img;
}

Image scatter_histogram(const std::vector<double>& xy, double xmin, double xmax, double ymin, double ymax,
                        int width, int height) {
  Image img = blank_rgb(width, height, "scatter_histogram");
  EMBER_CHECK(xy.size() % 2 == 0, "scatter_histogram: xy holds (x, y) pairs, so its size must be even, got ",
              xy.size());
  EMBER_CHECK(std::isfinite(xmin) && std::isfinite(xmax) && xmin < xmax && std::isfinite(ymin) &&
                  std::isfinite(ymax) && ymin < ymax,
              "scatter_histogram: window [", xmin, ", ", xmax, "] x [", ymin, ", ", ymax,
              "] must be finite with min < max");
  std::vector<uint32_t> counts(size_t(width) * size_t(height), 0);
  for (size_t i = 0; i + 1 < xy.size(); i += 2) {
    double x = xy[i], y = xy[i + 1];
    // The comparisons are false for NaN, so NaN points are dropped here too.
    if (!(x >= xmin && x <= xmax && y >= ymin && y <= ymax)) continue;
    // y is flipped so that ymax lands on row 0, the top of the picture; the closed upper
    // edge of the window falls into the last bin.
    int col = std::min(width - 1, int((x - xmin) / (xmax - xmin) * width));
    int row = std::min(height - 1, int((ymax - y) / (ymax - ymin) * height));
    ++counts[size_t(row) * size_t(width) + size_t(col)];
  }
  uint32_t most = *std::max_element(counts.begin(), counts.end());
  // log(1 + count) keeps sparse tails visible next to a dense mode.
  const double scale = most > 0 ? 1.0 / std::log1p(double(most)) : 0.0;
  for (size_t i = 0; i < counts.size(); ++i) put(img, i, colormap(std::log1p(double(counts[i])) * scale));
  return img;
}

Image image_grid(const std::vector<float>& batch, int n, int channels, int h, int w, int nrow, bool minus_one_to_one,
                 int padding) {
  EMBER_CHECK(n > 0 && h > 0 && w > 0, "image_grid: need n, h, w > 0, got n=", n, " h=", h, " w=", w);
  EMBER_CHECK(channels == 1 || channels == 3, "image_grid: channels must be 1 or 3, got ", channels);
  EMBER_CHECK(nrow > 0, "image_grid: nrow (images per grid row) must be positive, got ", nrow);
  EMBER_CHECK(padding >= 0, "image_grid: padding must be >= 0, got ", padding);
  const int64_t plane = int64_t(h) * w;
  EMBER_CHECK(plane <= kMaxPixels && int64_t(n) * channels * plane == int64_t(batch.size()), "image_grid: batch has ",
              batch.size(), " values, expected n*channels*h*w = ", n, "*", channels, "*", h, "*", w);
  const int64_t cols = std::min(nrow, n), rows = (n + cols - 1) / cols;
  const int64_t gw = cols * (w + int64_t(padding)) + padding, gh = rows * (h + int64_t(padding)) + padding;
  EMBER_CHECK(gw * gh <= kMaxPixels, "image_grid: a ", gw, " x ", gh, " grid is more than the ", kMaxPixels,
              " pixels allowed");

  Image img;
  img.width = int(gw);
  img.height = int(gh);
  img.channels = channels;
  img.pixels.assign(size_t(gw * gh * channels), 0);  // padding stays black
  for (int i = 0; i < n; ++i) {
    const int64_t x0 = padding + (i % cols) * (w + int64_t(padding));
    const int64_t y0 = padding + (i / cols) * (h + int64_t(padding));
    for (int c = 0; c < channels; ++c) {
      const float* src = batch.data() + (int64_t(i) * channels + c) * plane;
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) {
          float v = src[int64_t(y) * w + x];
          if (minus_one_to_one) v = (v + 1.0f) * 0.5f;
          v = std::isnan(v) ? 0.0f : std::clamp(v, 0.0f, 1.0f);
          img.pixels[size_t(((y0 + y) * gw + x0 + x) * channels + c)] = uint8_t(v * 255.0f + 0.5f);
        }
    }
  }
  return img;
}

}  // namespace ember::data
