// 2-D pooling and nearest upsampling on the GPU, forwards and backwards, over contiguous
// [planes, H, W] images (a plane per (n, c)).
//
// Every kernel is one thread per element of the tensor it writes, in a grid-stride loop with
// 64-bit indices. The forwards read a small window per output. The backwards (and the max-pool
// scatter, the backward of reading x at the argmax indices) are written as gathers over the
// input pixels rather than scatters over the outputs: pixel (h, w) lies in the windows of the
// outputs oh with oh*sh - ph <= h < oh*sh - ph + kh (likewise ow), a range of at most
// ceil(kh/sh) x ceil(kw/sw) outputs, and the thread adds their terms in increasing output
// order. That is the order the CPU's scatter loops add them in (ops/conv.cpp), so the results
// have the CPU's bits, with no atomics and nothing that changes run to run; each product
// gy * (1 / (kh*kw)) is rounded on its own as the CPU rounds it (mul_rn, never fused).
// No tiling: every kernel is bound by memory traffic (a window of kh*kw reads per element, the
// neighbouring threads' windows overlapping in cache), not by arithmetic.
#include "ember/kernels/cuda/conv.h"
#include "ember/kernels/cuda/conv_common.cuh"

namespace ember::kernels::cuda {

namespace {

using namespace conv_detail;

// The window of output (oh, ow), clipped to the image: rows [h0, h1), columns [w0, w1).
struct Window {
  int64_t h0, h1, w0, w1;
};

__device__ __forceinline__ Window window_of(const PoolGeometry& q, int64_t oh, int64_t ow) {
  const int64_t h0 = oh * q.sh - q.ph, w0 = ow * q.sw - q.pw;
  return {h0 < 0 ? 0 : h0, h0 + q.kh < q.H ? h0 + q.kh : q.H, w0 < 0 ? 0 : w0, w0 + q.kw < q.W ? w0 + q.kw : q.W};
}

// The outputs [lo, hi) along one dim whose windows (start o*stride - pad, length k) contain
// position x; empty when none does.
__device__ __forceinline__ void outputs_covering(int64_t x, int64_t k, int64_t stride, int64_t pad, int64_t out,
                                                 int64_t& lo, int64_t& hi) {
  const int64_t first = x + pad - k + 1;  // o*stride >= first
  lo = first <= 0 ? 0 : (first + stride - 1) / stride;
  hi = (x + pad) / stride + 1;  // o*stride <= x + pad (x + pad >= 0)
  if (hi > out) hi = out;
  if (hi < lo) hi = lo;
}

template <typename T>
__device__ __forceinline__ bool is_nan(T v) {
  return v != v;
}

template <typename T>
__global__ void avg_pool_kernel(const T* __restrict__ x, T* __restrict__ y, PoolGeometry q, T inv, int64_t total) {
  const int64_t out_plane = q.OH * q.OW;
  for (int64_t i = first_index(); i < total; i += grid_step()) {
    const int64_t o = i % out_plane, pl = i / out_plane;
    const Window win = window_of(q, o / q.OW, o % q.OW);
    const T* xp = x + pl * q.H * q.W;
    T acc = T(0);
    for (int64_t h = win.h0; h < win.h1; ++h)
      for (int64_t w = win.w0; w < win.w1; ++w) acc += xp[h * q.W + w];
    y[i] = acc * inv;
  }
}

template <typename T>
__global__ void avg_pool_backward_kernel(const T* __restrict__ gy, T* __restrict__ gx, PoolGeometry q, T inv,
                                         int64_t total) {
  const int64_t plane = q.H * q.W;
  for (int64_t i = first_index(); i < total; i += grid_step()) {
    const int64_t w = i % q.W, h = (i / q.W) % q.H, pl = i / plane;
    int64_t oh0, oh1, ow0, ow1;
    outputs_covering(h, q.kh, q.sh, q.ph, q.OH, oh0, oh1);
    outputs_covering(w, q.kw, q.sw, q.pw, q.OW, ow0, ow1);
    const T* gp = gy + pl * q.OH * q.OW;
    T acc = T(0);
    for (int64_t oh = oh0; oh < oh1; ++oh)
      for (int64_t ow = ow0; ow < ow1; ++ow) acc += mul_rn(gp[oh * q.OW + ow], inv);
    gx[i] = acc;
  }
}

// The CPU's scan, step for step: the first maximum in row-major order wins; a NaN wins and ends it.
template <typename T>
__global__ void max_pool_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t* __restrict__ idx,
                                PoolGeometry q, int64_t total) {
  const int64_t out_plane = q.OH * q.OW;
  for (int64_t i = first_index(); i < total; i += grid_step()) {
    const int64_t o = i % out_plane, pl = i / out_plane;
    const Window win = window_of(q, o / q.OW, o % q.OW);
    const T* xp = x + pl * q.H * q.W;
    int64_t best_i = win.h0 * q.W + win.w0;  // padding <= kernel / 2: the window is never empty
    T best = xp[best_i];
    for (int64_t h = win.h0; h < win.h1 && !is_nan(best); ++h)
      for (int64_t w = win.w0; w < win.w1; ++w) {
        const T v = xp[h * q.W + w];
        if (v > best || is_nan(v)) {
          best = v;
          best_i = h * q.W + w;
          if (is_nan(v)) break;
        }
      }
    y[i] = best;
    idx[i] = best_i;
  }
}

template <typename T>
__global__ void max_pool_scatter_kernel(const T* __restrict__ gy, const int64_t* __restrict__ idx,
                                        T* __restrict__ gx, PoolGeometry q, int64_t total) {
  const int64_t plane = q.H * q.W, out_plane = q.OH * q.OW;
  for (int64_t i = first_index(); i < total; i += grid_step()) {
    const int64_t w = i % q.W, h = (i / q.W) % q.H, pl = i / plane, me = h * q.W + w;
    int64_t oh0, oh1, ow0, ow1;
    outputs_covering(h, q.kh, q.sh, q.ph, q.OH, oh0, oh1);
    outputs_covering(w, q.kw, q.sw, q.pw, q.OW, ow0, ow1);
    const T* gp = gy + pl * out_plane;
    const int64_t* ip = idx + pl * out_plane;
    T acc = T(0);
    for (int64_t oh = oh0; oh < oh1; ++oh)
      for (int64_t ow = ow0; ow < ow1; ++ow)
        if (ip[oh * q.OW + ow] == me) acc += gp[oh * q.OW + ow];
    gx[i] = acc;
  }
}

template <typename T>
__global__ void max_pool_gather_kernel(const T* __restrict__ x, const int64_t* __restrict__ idx, T* __restrict__ out,
                                       PoolGeometry q, int64_t total) {
  const int64_t plane = q.H * q.W, out_plane = q.OH * q.OW;
  for (int64_t i = first_index(); i < total; i += grid_step()) out[i] = x[(i / out_plane) * plane + idx[i]];
}

template <typename T>
__global__ void upsample_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t H, int64_t W, int64_t r,
                                int64_t total) {
  const int64_t OW = W * r, out_plane = H * r * OW;
  for (int64_t i = first_index(); i < total; i += grid_step()) {
    const int64_t ow = i % OW, oh = (i / OW) % (H * r), pl = i / out_plane;
    y[i] = x[(pl * H + oh / r) * W + ow / r];
  }
}

// Each input pixel sums its r x r block row by row, the order the CPU adds the block in.
template <typename T>
__global__ void upsample_backward_kernel(const T* __restrict__ gy, T* __restrict__ gx, int64_t H, int64_t W,
                                         int64_t r, int64_t total) {
  const int64_t OW = W * r;
  for (int64_t i = first_index(); i < total; i += grid_step()) {
    const int64_t w = i % W, h = (i / W) % H, pl = i / (H * W);
    const T* block = gy + (pl * H * r + h * r) * OW + w * r;
    T acc = T(0);
    for (int64_t a = 0; a < r; ++a)
      for (int64_t b = 0; b < r; ++b) acc += block[a * OW + b];
    gx[i] = acc;
  }
}

}  // namespace

void avg_pool2d(ElemType t, const void* x, void* y, int64_t planes, const PoolGeometry& q, void* stream) {
  const int64_t total = planes * q.OH * q.OW;
  dispatch_float(t, "avg_pool2d", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T inv = T(1) / static_cast<T>(q.kh * q.kw);
    launch(avg_pool_kernel<T>, total, stream, "avg_pool2d", static_cast<const T*>(x), static_cast<T*>(y), q, inv,
           total);
  });
}

void avg_pool2d_backward(ElemType t, const void* gy, void* gx, int64_t planes, const PoolGeometry& q, void* stream) {
  const int64_t total = planes * q.H * q.W;
  dispatch_float(t, "avg_pool2d_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T inv = T(1) / static_cast<T>(q.kh * q.kw);
    launch(avg_pool_backward_kernel<T>, total, stream, "avg_pool2d_backward", static_cast<const T*>(gy),
           static_cast<T*>(gx), q, inv, total);
  });
}

void max_pool2d(ElemType t, const void* x, void* y, int64_t* idx, int64_t planes, const PoolGeometry& q,
                void* stream) {
  const int64_t total = planes * q.OH * q.OW;
  dispatch_float(t, "max_pool2d", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch(max_pool_kernel<T>, total, stream, "max_pool2d", static_cast<const T*>(x), static_cast<T*>(y), idx, q,
           total);
  });
}

void max_pool2d_scatter(ElemType t, const void* gy, const int64_t* idx, void* gx, int64_t planes,
                        const PoolGeometry& q, void* stream) {
  const int64_t total = planes * q.H * q.W;
  dispatch_float(t, "max_pool2d_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch(max_pool_scatter_kernel<T>, total, stream, "max_pool2d_backward", static_cast<const T*>(gy), idx,
           static_cast<T*>(gx), q, total);
  });
}

void max_pool2d_gather(ElemType t, const void* x, const int64_t* idx, void* out, int64_t planes,
                       const PoolGeometry& q, void* stream) {
  const int64_t total = planes * q.OH * q.OW;
  dispatch_float(t, "max_pool2d_gather", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch(max_pool_gather_kernel<T>, total, stream, "max_pool2d_gather", static_cast<const T*>(x), idx,
           static_cast<T*>(out), q, total);
  });
}

void upsample_nearest2d(ElemType t, const void* x, void* y, int64_t planes, int64_t H, int64_t W, int64_t r,
                        void* stream) {
  const int64_t total = planes * H * r * W * r;
  dispatch_float(t, "upsample_nearest2d", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch(upsample_kernel<T>, total, stream, "upsample_nearest2d", static_cast<const T*>(x), static_cast<T*>(y), H,
           W, r, total);
  });
}

void upsample_nearest2d_backward(ElemType t, const void* gy, void* gx, int64_t planes, int64_t H, int64_t W,
                                 int64_t r, void* stream) {
  const int64_t total = planes * H * W;
  dispatch_float(t, "upsample_nearest2d_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch(upsample_backward_kernel<T>, total, stream, "upsample_nearest2d_backward", static_cast<const T*>(gy),
           static_cast<T*>(gx), H, W, r, total);
  });
}

}  // namespace ember::kernels::cuda
