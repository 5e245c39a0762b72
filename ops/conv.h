// Convolution, pooling and resampling of images in NCHW layout (f32 and f64). A 3-D input
// [C, H, W] is taken as a batch of one and gives a 3-D result.
//
// Every op is differentiable to any order: conv2d's backward is conv_transpose2d (input) and
// conv2d_weight_grad (weight), and those three ops are each other's backwards; the pooling
// and upsampling backwards are recorded ops whose own backwards are the forward ops again.
#pragma once
#include <array>
#include <cstdint>
#include <utility>

#include "ember/engine/tensor.h"

namespace ember {

using Size2 = std::array<int64_t, 2>;  // {height, width}

// y[n, o] = bias[o] + sum over the input channels of o's group of the 2-D cross-correlation
// of x[n, c] with weight[o, c - group start]. x: [N, Cin, H, W]; weight: [Cout, Cin/groups,
// kh, kw]; bias: [Cout] or undefined. Output size per dim:
// (H + 2*padding - dilation*(kh - 1) - 1) / stride + 1 (floor).
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), Size2 stride = {1, 1},
              Size2 padding = {0, 0}, Size2 dilation = {1, 1}, int64_t groups = 1);

// The adjoint of conv2d with respect to its input ("deconvolution"), as PyTorch's
// conv_transpose2d. x: [N, Cin, H, W]; weight: [Cin, Cout/groups, kh, kw]; bias: [Cout].
// Output size per dim: (H - 1)*stride - 2*padding + dilation*(kh - 1) + output_padding + 1,
// with 0 <= output_padding < max(stride, dilation).
Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), Size2 stride = {1, 1},
                        Size2 padding = {0, 0}, Size2 output_padding = {0, 0}, int64_t groups = 1,
                        Size2 dilation = {1, 1});

// The gradient of conv2d with respect to its weight: d<conv2d(x, w), grad_out>/dw for
// x: [N, Cin, H, W] and grad_out: [N, Cout, OH, OW]; returns [Cout, Cin/groups, kernel].
// (The output size OH, OW is taken from grad_out.) Differentiable in x and grad_out.
Tensor conv2d_weight_grad(const Tensor& x, const Tensor& grad_out, Size2 kernel, Size2 stride = {1, 1},
                          Size2 padding = {0, 0}, Size2 dilation = {1, 1}, int64_t groups = 1);

// Mean over each window, the zero padding counted (PyTorch's count_include_pad=True).
// stride {0, 0} means stride = kernel. padding <= kernel / 2.
Tensor avg_pool2d(const Tensor& x, Size2 kernel, Size2 stride = {0, 0}, Size2 padding = {0, 0});
// Max over each window (padding never wins); the gradient goes to the first maximal element.
// stride {0, 0} means stride = kernel. padding <= kernel / 2.
Tensor max_pool2d(const Tensor& x, Size2 kernel, Size2 stride = {0, 0}, Size2 padding = {0, 0});
// Values and the flat index (h * W + w, i64) of each window's maximum within its plane.
std::pair<Tensor, Tensor> max_pool2d_with_indices(const Tensor& x, Size2 kernel, Size2 stride = {0, 0},
                                                  Size2 padding = {0, 0});

// Repeats every pixel scale x scale times: [N, C, H, W] -> [N, C, H*scale, W*scale].
Tensor upsample_nearest2d(const Tensor& x, int64_t scale_factor);

// [N, C*r*r, H, W] -> [N, C, H*r, W*r] and back (views and a copy, as in PyTorch).
Tensor pixel_shuffle(const Tensor& x, int64_t upscale_factor);
Tensor pixel_unshuffle(const Tensor& x, int64_t downscale_factor);

}  // namespace ember
