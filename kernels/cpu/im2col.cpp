// im2col / col2im (see im2col.h for the layout).
#include "ember/kernels/cpu/im2col.h"

#include <algorithm>

#include "ember/kernels/cpu/parallel.h"

namespace ember::kernels::cpu {

namespace {

// floor(a / b) and ceil(a / b) for b > 0 and any sign of a.
inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
inline int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

// The window positions ow in [lo, hi) whose tap at column offset `off` (iw = ow*stride + off)
// lies inside [0, width).
inline void valid_range(int64_t off, int64_t stride, int64_t width, int64_t out_w, int64_t& lo, int64_t& hi) {
  lo = std::max<int64_t>(0, ceil_div(-off, stride));
  hi = std::min<int64_t>(out_w, floor_div(width - 1 - off, stride) + 1);
  if (hi < lo) hi = lo;
}

// Channels per chunk so that a chunk moves at least ~32K elements.
inline int64_t channel_grain(const ConvGeometry& g) {
  const int64_t per_channel = std::max<int64_t>(1, g.kernel_h * g.kernel_w * g.out_h * g.out_w);
  return std::max<int64_t>(1, 32768 / per_channel);
}

template <typename T>
void im2col_impl(const T* im, const ConvGeometry& g, T* col) {
  const int64_t H = g.height, W = g.width, OH = g.out_h, OW = g.out_w, KH = g.kernel_h, KW = g.kernel_w;
  const int64_t sh = g.stride_h, sw = g.stride_w;
  const int64_t plane = OH * OW;
  parallel_for(0, g.channels, channel_grain(g), [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const T* src = im + c * H * W;
      for (int64_t i = 0; i < KH; ++i) {
        const int64_t row_off = i * g.dilation_h - g.pad_h;
        for (int64_t j = 0; j < KW; ++j) {
          const int64_t off = j * g.dilation_w - g.pad_w;
          int64_t lo, hi;
          valid_range(off, sw, W, OW, lo, hi);
          T* dst = col + ((c * KH + i) * KW + j) * plane;
          for (int64_t oh = 0; oh < OH; ++oh) {
            T* d = dst + oh * OW;
            const int64_t ih = oh * sh + row_off;
            if (ih < 0 || ih >= H) {
              std::fill(d, d + OW, T(0));
              continue;
            }
            std::fill(d, d + lo, T(0));
            if (hi > lo) {
              const T* s = src + ih * W + (lo * sw + off);  // pixel of window position lo
              T* dl = d + lo;
              const int64_t n = hi - lo;
              if (sw == 1) {
                for (int64_t k = 0; k < n; ++k) dl[k] = s[k];
              } else {
                for (int64_t k = 0; k < n; ++k) dl[k] = s[k * sw];
              }
            }
            std::fill(d + hi, d + OW, T(0));
          }
        }
      }
    }
  });
}

template <typename T>
void col2im_impl(const T* col, const ConvGeometry& g, T* im) {
  const int64_t H = g.height, W = g.width, OH = g.out_h, OW = g.out_w, KH = g.kernel_h, KW = g.kernel_w;
  const int64_t sh = g.stride_h, sw = g.stride_w;
  const int64_t plane = OH * OW;
  // Every col row of channel c adds into channel c only, so channels are independent.
  parallel_for(0, g.channels, channel_grain(g), [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      T* dst = im + c * H * W;
      for (int64_t i = 0; i < KH; ++i) {
        const int64_t row_off = i * g.dilation_h - g.pad_h;
        for (int64_t j = 0; j < KW; ++j) {
          const int64_t off = j * g.dilation_w - g.pad_w;
          int64_t lo, hi;
          valid_range(off, sw, W, OW, lo, hi);
          const T* src = col + ((c * KH + i) * KW + j) * plane;
          for (int64_t oh = 0; oh < OH; ++oh) {
            const int64_t ih = oh * sh + row_off;
            if (ih < 0 || ih >= H) continue;
            if (hi <= lo) continue;
            const T* s = src + oh * OW + lo;
            T* d = dst + ih * W + (lo * sw + off);  // pixel of window position lo
            const int64_t n = hi - lo;
            if (sw == 1) {
              for (int64_t k = 0; k < n; ++k) d[k] += s[k];
            } else {
              for (int64_t k = 0; k < n; ++k) d[k * sw] += s[k];
            }
          }
        }
      }
    }
  });
}

}  // namespace

void im2col(const float* im, const ConvGeometry& g, float* col) { im2col_impl(im, g, col); }
void im2col(const double* im, const ConvGeometry& g, double* col) { im2col_impl(im, g, col); }
void col2im(const float* col, const ConvGeometry& g, float* im) { col2im_impl(col, g, im); }
void col2im(const double* col, const ConvGeometry& g, double* im) { col2im_impl(col, g, im); }

}  // namespace ember::kernels::cpu
