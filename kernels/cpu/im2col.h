// im2col / col2im: the patch matrix of a 2-D sliding window over one image, the step that
// turns a convolution into a GEMM (ops/conv.cpp).
//
// The image is [C, H, W] (contiguous). Window position (oh, ow) with kernel tap (i, j) reads
// image pixel (oh*stride_h - pad_h + i*dilation_h, ow*stride_w - pad_w + j*dilation_w); taps
// outside the image read zero. The patch matrix ("col") is [C*KH*KW, OH*OW], row-major, its
// row index (c*KH + i)*KW + j, its column index oh*OW + ow. OH/OW may be any size; positions
// whose taps all fall outside the image simply read zeros. col2im is the adjoint of im2col: it
// ADDS each col entry into the pixel it was read from (the caller zeroes the image first).
//
// Both are memory-bound (each col element is written or read once); they split the channels
// over parallel.h's pool (inline when called inside a parallel_for chunk). The inner loop over
// ow is a plain copy for stride 1.
#pragma once
#include <cstdint>

namespace ember::kernels::cpu {

struct ConvGeometry {
  int64_t channels = 0, height = 0, width = 0;  // the image
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t out_h = 0, out_w = 0;  // window positions
};

void im2col(const float* im, const ConvGeometry& g, float* col);
void im2col(const double* im, const ConvGeometry& g, double* col);
void col2im(const float* col, const ConvGeometry& g, float* im);   // im += col2im(col)
void col2im(const double* col, const ConvGeometry& g, double* im);

}  // namespace ember::kernels::cpu
