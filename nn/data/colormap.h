// Turning numbers into pictures for run folders: a sequential colormap, density heat maps,
// 2-D histograms of samples, and grids of image samples. Everything returns an 8-bit Image
// (nn/data/png.h) ready for write_png.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "ember/nn/data/png.h"

namespace ember::data {

// ember's sequential colormap: dark blue-purple -> blue -> teal -> green -> yellow, built by
// straight-line interpolation in the OKLab colour space between five anchors of evenly
// rising lightness, so perceived lightness increases steadily with t (the map reads correctly
// in grayscale and to colour-blind readers). t is clamped to [0, 1]; NaN gives mid grey
// (128, 128, 128) so missing values stand out from every real value.
std::array<uint8_t, 3> colormap(double t);

// An RGB heat map of a width x height field given row-major (row 0 is the top row). Values
// are normalised from their min to their max; a constant field maps to the middle colour.
// With log_scale the natural log of each value is mapped instead, and values <= 0 take the
// lowest colour. Non-finite values are drawn grey and ignored for the range.
Image heatmap(const std::vector<double>& values, int width, int height, bool log_scale = false);

// A 2-D histogram of points xy = {x0, y0, x1, y1, ...} over [xmin, xmax] x [ymin, ymax],
// binned into width x height pixels (x to the right, y up: ymax is the top row) and coloured
// by log(1 + count) relative to the fullest bin. Points outside the window or not finite are
// dropped. RGB.
Image scatter_histogram(const std::vector<double>& xy, double xmin, double xmax, double ymin, double ymax,
                        int width, int height);

// Tiles n images of a batch (NCHW floats, channels 1 or 3) into a grid with nrow images per
// row and `padding` black pixels around and between them, like torchvision's make_grid.
// Values are taken in [0, 1], or in [-1, 1] when minus_one_to_one; they are clamped to that
// range (NaN becomes black). The result has `channels` channels.
Image image_grid(const std::vector<float>& batch, int n, int channels, int h, int w, int nrow,
                 bool minus_one_to_one, int padding = 2);

}  // namespace ember::data
