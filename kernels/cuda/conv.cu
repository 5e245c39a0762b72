// im2col / col2im and the channel bias on the GPU: the data movement that turns a convolution
// into cuBLAS GEMMs (ops/conv.cpp), for a chunk of the batch per launch. The patch matrix is
// the CPU's (kernels/cpu/im2col.h): col [C*KH*KW, OH*OW] per image, row (c*KH + i)*KW + j,
// column oh*OW + ow, taps outside the image reading zero.
//
// im2col is one thread per col element: consecutive threads walk the window positions of one
// col row, so the writes are coalesced (and the reads too at stride 1).
//
// col2im is written as a gather, one thread per image pixel, which adds up the (at most KH*KW)
// col entries that read that pixel. Tap (i, j) of window (oh, ow) reads row
// h = oh*sh - ph + i*dh, so for each i the window row is oh = (h + ph - i*dh) / sh where that
// divides exactly and lands in [0, OH) (the same for columns). No atomics and no zeroing pass;
// each pixel's terms are added in increasing tap order starting from zero, the order the CPU's
// col2im adds them in, so the bits match the CPU's and do not change run to run.
//
// All three are bound by memory traffic, not arithmetic; indices are 64-bit throughout.
#include "ember/kernels/cuda/conv.h"
#include "ember/kernels/cuda/conv_common.cuh"

namespace ember::kernels::cuda {

namespace {

using namespace conv_detail;

template <typename T>
__global__ void im2col_kernel(const T* __restrict__ im, T* __restrict__ col, ConvGeometry g, int64_t total) {
  const int64_t positions = g.out_h * g.out_w, taps = g.kernel_h * g.kernel_w, rows = g.channels * taps;
  const int64_t image = g.channels * g.height * g.width;
  for (int64_t i = first_index(); i < total; i += grid_step()) {
    const int64_t p = i % positions, row = (i / positions) % rows, n = i / (positions * rows);
    const int64_t c = row / taps, tap = row % taps, ki = tap / g.kernel_w, kj = tap % g.kernel_w;
    const int64_t oh = p / g.out_w, ow = p % g.out_w;
    const int64_t h = oh * g.stride_h - g.pad_h + ki * g.dilation_h;
    const int64_t w = ow * g.stride_w - g.pad_w + kj * g.dilation_w;
    const bool inside = h >= 0 && h < g.height && w >= 0 && w < g.width;
    col[i] = inside ? im[n * image + (c * g.height + h) * g.width + w] : T(0);
  }
}

template <typename T>
__global__ void col2im_kernel(const T* __restrict__ col, T* __restrict__ im, ConvGeometry g, int64_t total) {
  const int64_t positions = g.out_h * g.out_w, taps = g.kernel_h * g.kernel_w;
  const int64_t plane = g.height * g.width, image = g.channels * plane;
  for (int64_t i = first_index(); i < total; i += grid_step()) {
    const int64_t w = i % g.width, h = (i / g.width) % g.height, c = (i / plane) % g.channels, n = i / image;
    const T* rows = col + (n * g.channels + c) * taps * positions;  // this pixel's channel's KH*KW col rows
    T acc = T(0);
    for (int64_t ki = 0; ki < g.kernel_h; ++ki) {
      const int64_t hs = h + g.pad_h - ki * g.dilation_h;  // oh * stride_h for the window whose tap ki reads h
      if (hs < 0 || hs % g.stride_h != 0) continue;
      const int64_t oh = hs / g.stride_h;
      if (oh >= g.out_h) continue;
      for (int64_t kj = 0; kj < g.kernel_w; ++kj) {
        const int64_t ws = w + g.pad_w - kj * g.dilation_w;
        if (ws < 0 || ws % g.stride_w != 0) continue;
        const int64_t ow = ws / g.stride_w;
        if (ow >= g.out_w) continue;
        acc += rows[(ki * g.kernel_w + kj) * positions + oh * g.out_w + ow];
      }
    }
    im[i] = acc;
  }
}

template <typename T>
__global__ void add_channel_bias_kernel(T* __restrict__ y, const T* __restrict__ b, int64_t channels, int64_t plane,
                                        int64_t total) {
  for (int64_t i = first_index(); i < total; i += grid_step()) y[i] += b[(i / plane) % channels];
}

}  // namespace

void im2col(ElemType t, const void* im, void* col, const ConvGeometry& g, int64_t images, void* stream) {
  const int64_t total = images * g.channels * g.kernel_h * g.kernel_w * g.out_h * g.out_w;
  dispatch_float(t, "im2col", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch(im2col_kernel<T>, total, stream, "im2col", static_cast<const T*>(im), static_cast<T*>(col), g, total);
  });
}

void col2im(ElemType t, const void* col, void* im, const ConvGeometry& g, int64_t images, void* stream) {
  const int64_t total = images * g.channels * g.height * g.width;
  dispatch_float(t, "col2im", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch(col2im_kernel<T>, total, stream, "col2im", static_cast<const T*>(col), static_cast<T*>(im), g, total);
  });
}

void add_channel_bias(ElemType t, void* y, const void* b, int64_t images, int64_t channels, int64_t plane,
                      void* stream) {
  const int64_t total = images * channels * plane;
  dispatch_float(t, "conv bias", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch(add_channel_bias_kernel<T>, total, stream, "conv bias", static_cast<T*>(y), static_cast<const T*>(b),
           channels, plane, total);
  });
}

}  // namespace ember::kernels::cuda
