// Convolutions via im2col + GEMM, pooling, nearest upsampling and pixel (un)shuffle.
//
// Three kernels do all the convolution work, one sample at a time (kernels/cpu/im2col.h for
// the patch matrix "col" = [Cin*kh*kw, OH*OW], kernels/cpu/gemm.h for the products; g indexes
// the groups):
//   conv2d            y[g]   = W[g] @ col(x)[g]                       [Cout/G, OH*OW]
//   conv_transpose2d  y      = col2im( W[g]^T @ x[g] )                (the adjoint of conv2d in x)
//   weight gradient   dW[g]  = sum_n gy[n][g] @ col(x[n])[g]^T        [Cout/G, Cin/G*kh*kw]
// A 1x1, stride-1, unpadded convolution skips im2col (x itself is the patch matrix). The batch
// is split over the thread pool when it is large enough to keep every thread busy (each
// sample's GEMMs then run single-threaded inside their chunk); otherwise the samples run one
// after another and each GEMM uses every thread.
//
// Higher derivatives: the three ops are each other's backwards, so every backward is built
// from recorded ops. With y = conv2d(x, W), <gy, y> = <conv_transpose2d(gy, W), x> =
// <conv2d_weight_grad(x, gy), W>; hence
//   conv2d(x, W)             -> dx = conv_transpose2d(gy, W),  dW = weight_grad(x, gy)
//   conv_transpose2d(x, W)   -> dx = conv2d(gy, W),            dW = weight_grad(gy, x)
//   weight_grad(x, gy) [ggW] -> dx = conv_transpose2d(gy, ggW), dgy = conv2d(x, ggW)
// The internal forms take the output's spatial size explicitly (instead of output_padding),
// so each backward recovers its input's size exactly, whatever the stride left over.
//
// On the GPU the same three products run, for f32, as implicit-GEMM kernels that gather the
// patches tile by tile in shared memory (kernels/cuda/conv_igemm.cu; depthwise convolutions as
// direct kernels), and otherwise (f64, a 1x1 stride-1 unpadded convolution, which is a plain
// GEMM) as im2col / col2im kernels (kernels/cuda/conv.cu) and cuBLAS GEMMs, a chunk of the
// batch at a time; both under the matmul precision setting (see conv2d_gpu). Pooling and
// upsampling have kernels of their own (kernels/cuda/pool.cu). Every backward is the same
// recorded op, so derivatives of any order stay on the device. Pixel (un)shuffle are reshapes
// and permutes, so they need no kernel.
#include "ember/ops/conv.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>

#include "ember/engine/autograd/graph_export.h"
#include "ember/engine/autograd/node.h"
#include "ember/engine/dispatch.h"
#include "ember/engine/factory.h"
#include "ember/kernels/cpu/gemm.h"
#include "ember/kernels/cpu/im2col.h"
#include "ember/kernels/cpu/parallel.h"
#include "ember/kernels/cuda/blas.h"
#include "ember/kernels/cuda/conv.h"
#include "ember/kernels/cuda/conv_igemm.h"
#include "ember/engine/autograd/narrow_saved.h"
#include "ember/engine/precision.h"
#if EMBER_WITH_CUDA
#include "ember/engine/cuda/bridge.h"
#endif
#include "ember/ops/elementwise.h"
#include "ember/ops/reduce.h"
#include "ember/ops/shape.h"

namespace ember {

using autograd::input_grad;
using autograd::record;
namespace kc = kernels::cpu;

namespace {

// ======================================================================================
// shared helpers
// ======================================================================================

struct ConvParams {
  Size2 stride{1, 1}, padding{0, 0}, dilation{1, 1};
  int64_t groups = 1;
};

std::string size2_str(Size2 s) { return detail::concat("{", s[0], ", ", s[1], "}"); }

// Same device, same floating dtype, for every defined tensor.
void check_operands(const char* op, const TensorList& ts) {
  const Tensor& first = ts[0];
  EMBER_CHECK(first.is_floating_point(), op, ": expected a floating tensor, got ", first.str());
  for (size_t i = 1; i < ts.size(); ++i) {
    if (!ts[i].defined()) continue;
    EMBER_CHECK(ts[i].device() == first.device(), op, ": operands on different devices (", first.str(), " and ",
                ts[i].str(), ")");
    EMBER_CHECK(ts[i].dtype() == first.dtype(), op, ": dtypes differ (", first.str(), " and ", ts[i].str(),
                "); convert one with .to(dtype)");
  }
}

void check_params(const char* op, Size2 stride, Size2 padding, Size2 dilation, int64_t groups) {
  EMBER_CHECK(stride[0] >= 1 && stride[1] >= 1, op, ": stride must be >= 1, got ", size2_str(stride));
  EMBER_CHECK(padding[0] >= 0 && padding[1] >= 0, op, ": padding must be >= 0, got ", size2_str(padding));
  EMBER_CHECK(dilation[0] >= 1 && dilation[1] >= 1, op, ": dilation must be >= 1, got ", size2_str(dilation));
  EMBER_CHECK(groups >= 1, op, ": groups must be >= 1, got ", groups);
}

// The input as [N, C, H, W]: a 3-D [C, H, W] is a batch of one.
void check_image(const char* op, const Tensor& x) {
  EMBER_CHECK(x.dim() == 4, op, ": expected an input of shape [N, C, H, W] or [C, H, W], got ", shape_str(x.sizes()));
}

Tensor contiguous_data(const Tensor& t) { return t.detach().contiguous(); }

kc::ConvGeometry geometry(int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, const ConvParams& p, int64_t OH,
                          int64_t OW) {
  kc::ConvGeometry g;
  g.channels = C;
  g.height = H;
  g.width = W;
  g.kernel_h = kh;
  g.kernel_w = kw;
  g.stride_h = p.stride[0];
  g.stride_w = p.stride[1];
  g.pad_h = p.padding[0];
  g.pad_w = p.padding[1];
  g.dilation_h = p.dilation[0];
  g.dilation_w = p.dilation[1];
  g.out_h = OH;
  g.out_w = OW;
  return g;
}

// The patch matrix of a 1x1, stride-1, unpadded window over the whole image is the image.
bool is_identity(const kc::ConvGeometry& g) {
  return g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 && g.pad_w == 0 &&
         g.out_h == g.height && g.out_w == g.width;
}

inline void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                 int64_t ldb, float beta, float* C, int64_t ldc) {
  kc::sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}
inline void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
                 int64_t ldb, double beta, double* C, int64_t ldc) {
  kc::dgemm(ta, tb, M, N, K, 1.0, A, lda, B, ldb, beta, C, ldc);
}

template <typename T>
std::unique_ptr<T[]> scratch(int64_t n) {
  return std::unique_ptr<T[]>(n > 0 ? new T[n] : nullptr);
}

// Split the batch over the threads (GEMMs single-threaded inside each chunk) when there are
// enough samples for every thread or a sample is too small for a threaded GEMM to pay off.
bool split_batch(int64_t N, double flops_per_sample) {
  const int nt = kc::num_threads();
  if (N <= 1 || nt <= 1) return false;
  return N >= nt || flops_per_sample < 4e6;
}

// fn(n, scratch) for every sample, with one scratch buffer of `scratch_size` elements per chunk.
template <typename T, typename F>
void for_each_sample(int64_t N, bool split, int64_t scratch_size, const F& fn) {
  if (split) {
    kc::parallel_for(0, N, 1, [&](int64_t b, int64_t e) {
      auto buf = scratch<T>(scratch_size);
      for (int64_t n = b; n < e; ++n) fn(n, buf.get());
    });
  } else {
    auto buf = scratch<T>(scratch_size);
    for (int64_t n = 0; n < N; ++n) fn(n, buf.get());
  }
}

template <typename T>
void add_bias(T* y, const T* b, int64_t C, int64_t plane) {
  for (int64_t c = 0; c < C; ++c) {
    T* p = y + c * plane;
    const T v = b[c];
    for (int64_t i = 0; i < plane; ++i) p[i] += v;
  }
}

// ======================================================================================
// convolution kernels (raw pointers, contiguous NCHW)
// ======================================================================================

struct ConvShape {
  int64_t N, Cin, H, W;  // the conv2d input (the image im2col reads)
  int64_t Cout, OH, OW;  // the conv2d output (window positions)
  int64_t kh, kw;
};

// y [N, Cout, OH, OW] = conv2d(x [N, Cin, H, W], w [Cout, Cin/G, kh, kw]) (+ b)
template <typename T>
void conv2d_kernel(const T* x, const T* w, const T* b, T* y, const ConvShape& s, const ConvParams& p) {
  const int64_t G = p.groups, Cig = s.Cin / G, Cog = s.Cout / G, P = s.OH * s.OW, Kd = Cig * s.kh * s.kw;
  const auto geo = geometry(s.Cin, s.H, s.W, s.kh, s.kw, p, s.OH, s.OW);
  const bool direct = is_identity(geo);
  const bool split = split_batch(s.N, 2.0 * s.Cout * Kd * P);
  for_each_sample<T>(s.N, split, direct ? 0 : s.Cin * s.kh * s.kw * P, [&](int64_t n, T* col) {
    const T* xn = x + n * s.Cin * s.H * s.W;
    T* yn = y + n * s.Cout * P;
    const T* cols = xn;
    if (!direct) {
      kc::im2col(xn, geo, col);
      cols = col;
    }
    for (int64_t g = 0; g < G; ++g)
      gemm(false, false, Cog, P, Kd, w + g * Cog * Kd, Kd, cols + g * Kd * P, P, T(0), yn + g * Cog * P, P);
    if (b) add_bias(yn, b, s.Cout, P);
  });
}

// y [N, Cin, H, W] = conv_transpose2d(x [N, Cout, OH, OW], w [Cout, Cin/G, kh, kw]) (+ b):
// the adjoint of conv2d_kernel in its input (shapes named as in that conv2d).
template <typename T>
void conv_transpose2d_kernel(const T* x, const T* w, const T* b, T* y, const ConvShape& s, const ConvParams& p) {
  const int64_t G = p.groups, Cig = s.Cin / G, Cog = s.Cout / G, P = s.OH * s.OW, Md = Cig * s.kh * s.kw;
  const auto geo = geometry(s.Cin, s.H, s.W, s.kh, s.kw, p, s.OH, s.OW);
  const bool direct = is_identity(geo);
  const bool split = split_batch(s.N, 2.0 * s.Cout * Md * P);
  const int64_t ysize = s.Cin * s.H * s.W;
  for_each_sample<T>(s.N, split, direct ? 0 : s.Cin * s.kh * s.kw * P, [&](int64_t n, T* col) {
    const T* xn = x + n * s.Cout * P;
    T* yn = y + n * ysize;
    T* cols = direct ? yn : col;
    for (int64_t g = 0; g < G; ++g)  // col[g] = W[g]^T @ x[g]; W[g] is [Cout/G, Cin/G*kh*kw]
      gemm(true, false, Md, P, Cog, w + g * Cog * Md, Md, xn + g * Cog * P, P, T(0), cols + g * Md * P, P);
    if (!direct) {
      std::fill(yn, yn + ysize, T(0));
      kc::col2im(col, geo, yn);
    }
    if (b) add_bias(yn, b, s.Cin, s.H * s.W);
  });
}

// dw [Cout, Cin/G, kh, kw] = sum_n gy[n] (x) col(x[n]) for x [N, Cin, H, W], gy [N, Cout, OH, OW].
template <typename T>
void conv2d_weight_grad_kernel(const T* x, const T* gy, T* dw, const ConvShape& s, const ConvParams& p) {
  const int64_t G = p.groups, Cig = s.Cin / G, Cog = s.Cout / G, P = s.OH * s.OW, Kd = Cig * s.kh * s.kw;
  const int64_t wsize = s.Cout * Kd;
  const auto geo = geometry(s.Cin, s.H, s.W, s.kh, s.kw, p, s.OH, s.OW);
  const bool direct = is_identity(geo);
  const int64_t col_size = direct ? 0 : s.Cin * s.kh * s.kw * P;
  if (s.N == 0 || P == 0) {
    std::fill(dw, dw + wsize, T(0));
    return;
  }
  // Adds (or, for the first sample, writes) sample n's contribution into dst.
  auto accumulate = [&](int64_t n, T* col, T* dst, bool first) {
    const T* xn = x + n * s.Cin * s.H * s.W;
    const T* gn = gy + n * s.Cout * P;
    const T* cols = xn;
    if (!direct) {
      kc::im2col(xn, geo, col);
      cols = col;
    }
    for (int64_t g = 0; g < G; ++g)
      gemm(false, true, Cog, Kd, P, gn + g * Cog * P, P, cols + g * Kd * P, P, first ? T(0) : T(1),
           dst + g * Cog * Kd, Kd);
  };
  if (!split_batch(s.N, 2.0 * s.Cout * Kd * P)) {
    auto col = scratch<T>(col_size);
    for (int64_t n = 0; n < s.N; ++n) accumulate(n, col.get(), dw, n == 0);
    return;
  }
  // One partial sum per chunk of samples, added in a fixed order at the end.
  const int64_t chunks = std::min<int64_t>(s.N, kc::num_threads());
  auto partial = scratch<T>(chunks * wsize);
  kc::parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
    auto col = scratch<T>(col_size);
    for (int64_t c = cb; c < ce; ++c) {
      const int64_t n0 = c * s.N / chunks, n1 = (c + 1) * s.N / chunks;
      for (int64_t n = n0; n < n1; ++n) accumulate(n, col.get(), partial.get() + c * wsize, n == n0);
    }
  });
  kc::parallel_for(0, wsize, 4096, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      T acc = partial[i];
      for (int64_t c = 1; c < chunks; ++c) acc += partial[c * wsize + i];
      dw[i] = acc;
    }
  });
}

// ======================================================================================
// convolutions on the GPU: implicit GEMM (kernels/cuda/conv_igemm.cu), or im2col / col2im
// (kernels/cuda/conv.cu) and cuBLAS GEMMs
// ======================================================================================
//
// Each of the three functions below first offers its convolution to the implicit-GEMM kernels
// (use_igemm: f32, not a plain GEMM, within their indices). Otherwise they run the same three
// products as the CPU kernels above, with the batch taken a chunk at a time: one im2col launch
// fills the patch matrices of every sample of the chunk, and the products of
// all (sample, group) pairs go to cuBLAS as strided batches. A strided batch has one stride per
// operand, so one of the two indices is looped on the host: the groups when there are no more
// of them than samples (one launch for an ordinary convolution), the samples otherwise (a
// depthwise convolution of a small batch). The weight gradient sums over the samples, which a
// batch cannot do (its products write disjoint matrices), so it loops over the samples, adding
// each one's products into dW (beta = 1) with the groups as the batch. The precision setting
// applies to the f32 GEMMs exactly as to matmul's.

#if EMBER_WITH_CUDA
namespace kg = kernels::cuda;

// The implicit-GEMM kernels (kernels/cuda/conv_igemm.cu) take every f32 convolution except a
// 1x1, stride-1, unpadded one, which is a plain GEMM and stays with cuBLAS; f64, and shapes
// beyond the kernels' 32-bit indices, stay with im2col + cuBLAS below. Fills *g when it returns
// true.
bool use_igemm(const Tensor& x, const ConvShape& s, const ConvParams& p, kg::igemm::Geom* g) {
  if (x.dtype() != DType::f32 || is_identity(geometry(s.Cin, s.H, s.W, s.kh, s.kw, p, s.OH, s.OW))) return false;
  // An empty operand (its data pointer may be null) takes the im2col path, which never reads it.
  if (s.N * s.Cin * s.H * s.W == 0 || s.Cout * s.kh * s.kw == 0) return false;
  const int64_t v[] = {s.N, s.Cin, s.H, s.W, s.Cout, s.OH, s.OW, s.kh, s.kw, p.stride[0], p.stride[1],
                       p.padding[0], p.padding[1], p.dilation[0], p.dilation[1], p.groups};
  for (int64_t e : v)
    if (e > std::numeric_limits<int>::max()) return false;
  auto i = [](int64_t e) { return static_cast<int>(e); };
  *g = {i(s.N), i(s.Cin), i(s.H), i(s.W), i(s.Cout), i(s.OH), i(s.OW), i(s.kh), i(s.kw), i(p.stride[0]),
        i(p.stride[1]), i(p.padding[0]), i(p.padding[1]), i(p.dilation[0]), i(p.dilation[1]), i(p.groups)};
  return kg::conv_igemm_supports(*g, x.device().index);
}

const float* f32_ptr(const Tensor& t) { return t.defined() ? static_cast<const float*>(t.device_data()) : nullptr; }

// One operand of the (sample, group)-indexed products: the matrix of sample n, group g starts
// per_sample * n + per_group * g elements past base; its rows are ld elements apart.
struct GpuMatrix {
  char* base;
  int64_t ld, per_sample, per_group;
};

// The device address `offset` elements past t's first.
char* device_ptr(const Tensor& t, int64_t offset) {
  return static_cast<char*>(t.device_data()) + offset * static_cast<int64_t>(t.element_size());
}

GpuMatrix gpu_matrix(const Tensor& t, int64_t offset, int64_t ld, int64_t per_sample, int64_t per_group) {
  return {device_ptr(t, offset), ld, per_sample, per_group};
}

// C[n][g] = op(A[n][g]) op(B[n][g]) (+ beta C[n][g]) for n < samples, g < groups, with the CPU
// GEMM's operand convention (row-major, per-operand transpose flags).
void grouped_gemm_gpu(const Tensor& like, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const GpuMatrix& A,
                      const GpuMatrix& B, double beta, const GpuMatrix& C, int64_t samples, int64_t groups) {
  const kg::ElemType t = cuda::elem_type(like.dtype());
  const kg::MathMode mode = cuda::math_mode();
  const int device = like.device().index;
  void* stream = cuda::stream_of(like);
  const int64_t es = static_cast<int64_t>(like.element_size());
  if (groups <= samples) {  // a batch over the samples per group
    for (int64_t g = 0; g < groups; ++g)
      kg::gemm(t, mode, ta, tb, M, N, K, A.base + g * A.per_group * es, A.ld, A.per_sample,
               B.base + g * B.per_group * es, B.ld, B.per_sample, beta, C.base + g * C.per_group * es, C.ld,
               C.per_sample, samples, device, stream);
  } else {  // a batch over the groups per sample
    for (int64_t n = 0; n < samples; ++n)
      kg::gemm(t, mode, ta, tb, M, N, K, A.base + n * A.per_sample * es, A.ld, A.per_group,
               B.base + n * B.per_sample * es, B.ld, B.per_group, beta, C.base + n * C.per_sample * es, C.ld,
               C.per_group, groups, device, stream);
  }
}

// Samples per im2col chunk, so that a chunk's patch matrices stay within ~256 MiB.
int64_t chunk_samples(int64_t N, int64_t col_per_sample, size_t elem_size) {
  constexpr int64_t kColBytes = int64_t{256} << 20;
  const int64_t per_sample = std::max<int64_t>(1, col_per_sample * static_cast<int64_t>(elem_size));
  return std::clamp<int64_t>(kColBytes / per_sample, 1, std::max<int64_t>(N, 1));
}

// conv2d_kernel on the GPU; x, w, b contiguous, y fresh.
void conv2d_gpu(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const ConvShape& s,
                const ConvParams& p) {
  const int64_t G = p.groups, Cig = s.Cin / G, Cog = s.Cout / G, P = s.OH * s.OW, Kd = Cig * s.kh * s.kw;
  const int64_t image = s.Cin * s.H * s.W, col_rows = s.Cin * s.kh * s.kw;
  const auto geo = geometry(s.Cin, s.H, s.W, s.kh, s.kw, p, s.OH, s.OW);
  const kg::ElemType t = cuda::elem_type(x.dtype());
  void* stream = cuda::stream_of(x);
  if (kg::igemm::Geom ig; use_igemm(x, s, p, &ig)) {
    kg::conv_igemm_forward(cuda::math_mode(), ig, f32_ptr(x), f32_ptr(w), f32_ptr(b),
                           static_cast<float*>(y.device_data()), stream);
    return;
  }
  const GpuMatrix wm = gpu_matrix(w, 0, Kd, 0, Cog * Kd);  // W[g]: [Cout/G, Kd], shared by the samples
  if (is_identity(geo)) {
    grouped_gemm_gpu(y, false, false, Cog, P, Kd, wm, gpu_matrix(x, 0, P, image, Kd * P), 0.0,
                     gpu_matrix(y, 0, P, s.Cout * P, Cog * P), s.N, G);
  } else {
    const int64_t chunk = chunk_samples(s.N, col_rows * P, x.element_size());
    Tensor col = Tensor::empty({chunk * col_rows * P}, options_of(x));
    for (int64_t n0 = 0; n0 < s.N; n0 += chunk) {
      const int64_t nc = std::min(chunk, s.N - n0);
      kg::im2col(t, device_ptr(x, n0 * image), col.device_data(), geo, nc, stream);
      grouped_gemm_gpu(y, false, false, Cog, P, Kd, wm, gpu_matrix(col, 0, P, col_rows * P, Kd * P), 0.0,
                       gpu_matrix(y, n0 * s.Cout * P, P, s.Cout * P, Cog * P), nc, G);
    }
  }
  if (b.defined()) kg::add_channel_bias(t, y.device_data(), b.device_data(), s.N, s.Cout, P, stream);
}

// conv_transpose2d_kernel on the GPU (shapes named as in that conv2d); x, w, b contiguous.
void conv_transpose2d_gpu(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const ConvShape& s,
                          const ConvParams& p) {
  const int64_t G = p.groups, Cig = s.Cin / G, Cog = s.Cout / G, P = s.OH * s.OW, Md = Cig * s.kh * s.kw;
  const int64_t image = s.Cin * s.H * s.W, col_rows = s.Cin * s.kh * s.kw;
  const auto geo = geometry(s.Cin, s.H, s.W, s.kh, s.kw, p, s.OH, s.OW);
  const kg::ElemType t = cuda::elem_type(x.dtype());
  void* stream = cuda::stream_of(x);
  if (kg::igemm::Geom ig; use_igemm(x, s, p, &ig)) {  // conv2d's backward-data pass
    kg::conv_igemm_backward_data(cuda::math_mode(), ig, f32_ptr(x), f32_ptr(w), f32_ptr(b),
                                 static_cast<float*>(y.device_data()), stream);
    return;
  }
  const GpuMatrix wm = gpu_matrix(w, 0, Md, 0, Cog * Md);  // W[g]: [Cout/G, Md], used transposed
  if (is_identity(geo)) {
    grouped_gemm_gpu(y, true, false, Md, P, Cog, wm, gpu_matrix(x, 0, P, s.Cout * P, Cog * P), 0.0,
                     gpu_matrix(y, 0, P, image, Md * P), s.N, G);
  } else {
    const int64_t chunk = chunk_samples(s.N, col_rows * P, x.element_size());
    Tensor col = Tensor::empty({chunk * col_rows * P}, options_of(x));
    for (int64_t n0 = 0; n0 < s.N; n0 += chunk) {
      const int64_t nc = std::min(chunk, s.N - n0);
      grouped_gemm_gpu(y, true, false, Md, P, Cog, wm, gpu_matrix(x, n0 * s.Cout * P, P, s.Cout * P, Cog * P), 0.0,
                       gpu_matrix(col, 0, P, col_rows * P, Md * P), nc, G);
      kg::col2im(t, col.device_data(), device_ptr(y, n0 * image), geo, nc, stream);
    }
  }
  if (b.defined()) kg::add_channel_bias(t, y.device_data(), b.device_data(), s.N, s.Cin, s.H * s.W, stream);
}

// conv2d_weight_grad_kernel on the GPU; x, gy contiguous, dw fresh.
void conv2d_weight_grad_gpu(const Tensor& x, const Tensor& gy, Tensor dw, const ConvShape& s, const ConvParams& p) {
  const int64_t G = p.groups, Cig = s.Cin / G, Cog = s.Cout / G, P = s.OH * s.OW, Kd = Cig * s.kh * s.kw;
  const int64_t image = s.Cin * s.H * s.W, col_rows = s.Cin * s.kh * s.kw;
  if (s.N == 0 || P == 0) {
    dw.zero_();
    return;
  }
  const auto geo = geometry(s.Cin, s.H, s.W, s.kh, s.kw, p, s.OH, s.OW);
  const bool direct = is_identity(geo);
  const kg::ElemType t = cuda::elem_type(x.dtype());
  void* stream = cuda::stream_of(x);
  if (kg::igemm::Geom ig; use_igemm(x, s, p, &ig)) {
    const int device = x.device().index;
    const int64_t ws = kg::conv_igemm_weight_grad_workspace(ig, device);
    Tensor work = ws > 0 ? Tensor::empty({ws}, options_of(x)) : Tensor();
    kg::conv_igemm_backward_weight(cuda::math_mode(), ig, f32_ptr(x), f32_ptr(gy), static_cast<float*>(dw.device_data()),
                                   work.defined() ? static_cast<float*>(work.device_data()) : nullptr, device, stream);
    return;
  }
  const GpuMatrix dwm = gpu_matrix(dw, 0, Kd, 0, Cog * Kd);  // dW[g]: [Cout/G, Kd]
  const int64_t chunk = direct ? s.N : chunk_samples(s.N, col_rows * P, x.element_size());
  Tensor col = direct ? Tensor() : Tensor::empty({chunk * col_rows * P}, options_of(x));
  for (int64_t n0 = 0; n0 < s.N; n0 += chunk) {
    const int64_t nc = std::min(chunk, s.N - n0);
    if (!direct) kg::im2col(t, device_ptr(x, n0 * image), col.device_data(), geo, nc, stream);
    for (int64_t j = 0; j < nc; ++j) {
      const int64_t n = n0 + j;
      // dW[g] (+)= gy[n][g] [Cout/G, P] @ col(x[n])[g]^T [P, Kd]
      const GpuMatrix gm = gpu_matrix(gy, n * s.Cout * P, P, 0, Cog * P);
      const GpuMatrix cm =
          direct ? gpu_matrix(x, n * image, P, 0, Kd * P) : gpu_matrix(col, j * col_rows * P, P, 0, Kd * P);
      grouped_gemm_gpu(dw, false, true, Cog, Kd, P, gm, cm, n == 0 ? 0.0 : 1.0, dwm, 1, G);
    }
  }
}
#endif

// ======================================================================================
// convolution ops (recorded; sizes explicit, already checked)
// ======================================================================================

Tensor conv_transpose2d_impl(const Tensor& x, const Tensor& w, const Tensor& b, const ConvParams& p, int64_t OH,
                             int64_t OW);
Tensor conv2d_weight_grad_impl(const Tensor& x, const Tensor& gy, int64_t kh, int64_t kw, const ConvParams& p);

// Whether the weight gradient's kernels round their operands to BF16: the `medium` precision on
// the GPU, for f32 data, unless the image (conv2d's input) has one channel per group, which the
// exact depthwise kernels take. The conv then keeps its image operand for the backward in BF16
// (autograd/narrow_saved.h): on the implicit-GEMM path the widened copy is bit for bit what
// the kernel would have read; on the cuBLAS paths (1x1 convolutions, and channels past the
// implicit GEMM's table) the same to within BF16 rounding, since cuBLAS converts f32 operands by
// its own rules (or not at all, where its heuristic picks an f32 kernel).
bool weight_grad_rounds_to_bf16(const Tensor& t, int64_t image_channels_per_group) {
  return t.device().is_cuda() && t.dtype() == DType::f32 && matmul_precision() == MatmulPrecision::medium &&
         image_channels_per_group > 1;
}

// conv2d of x [N, Cin, H, W] with w [Cout, Cin/G, kh, kw], output [N, Cout, OH, OW].
Tensor conv2d_impl(const Tensor& x, const Tensor& w, const Tensor& b, const ConvParams& p, int64_t OH, int64_t OW) {
  const ConvShape s{x.size(0), x.size(1), x.size(2), x.size(3), w.size(0), OH, OW, w.size(2), w.size(3)};
  Tensor y = Tensor::empty({s.N, s.Cout, OH, OW}, options_of(x));
  if (y.numel() > 0) {
    Tensor xc = contiguous_data(x), wc = contiguous_data(w), bc = b.defined() ? contiguous_data(b) : Tensor();
    if (x.device().is_cuda()) {
      dispatch_floating(x.dtype(), "conv2d", [](auto) {});  // the CPU's dtype error
#if EMBER_WITH_CUDA
      conv2d_gpu(xc, wc, bc, y, s, p);
#endif
    } else {
      dispatch_floating(x.dtype(), "conv2d", [&](auto tag) {
        using T = typename decltype(tag)::type;
        conv2d_kernel<T>(xc.data<T>(), wc.data<T>(), bc.defined() ? bc.data<T>() : nullptr, y.data<T>(), s, p);
      });
    }
  }
  // x is read only by the weight gradient: kept where w requires grad, in BF16 where that
  // gradient's kernels round it to BF16 anyway.
  const Tensor kept = w.requires_grad() ? autograd::narrow_for_backward(x, weight_grad_rounds_to_bf16(x, w.size(1)))
                                        : Tensor();
  record("conv2d", {x, w, b}, y,
         [kept, w, p, rx = input_grad(x, 0), rw = input_grad(w, 1), rb = input_grad(b, 2)](
             const TensorList& g, const TensorList&) {
           const Tensor gy = g[0].contiguous();  // once for both products (a slice of cat's gradient is not)
           const Shape& xs = autograd::input_shape(0);
           Tensor gx = rx ? conv_transpose2d_impl(gy, w, Tensor(), p, xs[2], xs[3]) : Tensor();
           Tensor gw = rw ? conv2d_weight_grad_impl(autograd::widen_saved(kept, 0), gy, w.size(2), w.size(3), p)
                          : Tensor();
           Tensor gb = rb ? sum(gy, {0, 2, 3}) : Tensor();
           return TensorList{gx, gw, gb};
         },
         {kept, w});
  return y;
}

// conv_transpose2d of x [N, Cin, H, W] with w [Cin, Cout/G, kh, kw], output [N, Cout, OH, OW]:
// the adjoint of conv2d_impl(., w, p, H, W) on a [N, Cout, OH, OW] input.
Tensor conv_transpose2d_impl(const Tensor& x, const Tensor& w, const Tensor& b, const ConvParams& p, int64_t OH,
                             int64_t OW) {
  const int64_t Cout = w.size(1) * p.groups;
  // In conv2d's terms: the image is the output y, the window positions are x's pixels.
  const ConvShape s{x.size(0), Cout, OH, OW, x.size(1), x.size(2), x.size(3), w.size(2), w.size(3)};
  Tensor y = Tensor::empty({s.N, Cout, OH, OW}, options_of(x));
  if (y.numel() > 0) {
    Tensor xc = contiguous_data(x), wc = contiguous_data(w), bc = b.defined() ? contiguous_data(b) : Tensor();
    if (x.device().is_cuda()) {
      dispatch_floating(x.dtype(), "conv_transpose2d", [](auto) {});  // the CPU's dtype error
#if EMBER_WITH_CUDA
      conv_transpose2d_gpu(xc, wc, bc, y, s, p);
#endif
    } else {
      dispatch_floating(x.dtype(), "conv_transpose2d", [&](auto tag) {
        using T = typename decltype(tag)::type;
        conv_transpose2d_kernel<T>(xc.data<T>(), wc.data<T>(), bc.defined() ? bc.data<T>() : nullptr, y.data<T>(),
                                   s, p);
      });
    }
  }
  // x is read only by the weight gradient, as its second operand (the image there is gy, with
  // w.size(1) channels per group).
  const Tensor kept = w.requires_grad() ? autograd::narrow_for_backward(x, weight_grad_rounds_to_bf16(x, w.size(1)))
                                        : Tensor();
  record("conv_transpose2d", {x, w, b}, y,
         [kept, w, p, rx = input_grad(x, 0), rw = input_grad(w, 1), rb = input_grad(b, 2)](
             const TensorList& g, const TensorList&) {
           const Tensor gy = g[0].contiguous();  // once for both products (a slice of cat's gradient is not)
           const Shape& xs = autograd::input_shape(0);
           Tensor gx = rx ? conv2d_impl(gy, w, Tensor(), p, xs[2], xs[3]) : Tensor();
           Tensor gw = rw ? conv2d_weight_grad_impl(gy, autograd::widen_saved(kept, 0), w.size(2), w.size(3), p)
                          : Tensor();
           Tensor gb = rb ? sum(gy, {0, 2, 3}) : Tensor();
           return TensorList{gx, gw, gb};
         },
         {kept, w});
  return y;
}

// d<conv2d(x, W), gy>/dW for x [N, Cin, H, W], gy [N, Cout, OH, OW]: [Cout, Cin/G, kh, kw].
Tensor conv2d_weight_grad_impl(const Tensor& x, const Tensor& gy, int64_t kh, int64_t kw, const ConvParams& p) {
  const ConvShape s{x.size(0), x.size(1), x.size(2), x.size(3), gy.size(1), gy.size(2), gy.size(3), kh, kw};
  Tensor dw = Tensor::empty({s.Cout, s.Cin / p.groups, kh, kw}, options_of(x));
  if (dw.numel() > 0) {
    Tensor xc = contiguous_data(x), gc = contiguous_data(gy);
    if (x.device().is_cuda()) {
      dispatch_floating(x.dtype(), "conv2d_weight_grad", [](auto) {});  // the CPU's dtype error
#if EMBER_WITH_CUDA
      conv2d_weight_grad_gpu(xc, gc, dw, s, p);
#endif
    } else {
      dispatch_floating(x.dtype(), "conv2d_weight_grad", [&](auto tag) {
        using T = typename decltype(tag)::type;
        conv2d_weight_grad_kernel<T>(xc.data<T>(), gc.data<T>(), dw.data<T>(), s, p);
      });
    }
  }
  record("conv2d_weight_grad", {x, gy}, dw,
         [x, gy, p, rx = input_grad(x, 0), rg = input_grad(gy, 1)](const TensorList& g, const TensorList&) {
           const Tensor& gw = g[0];
           Tensor gx = rx ? conv_transpose2d_impl(gy, gw, Tensor(), p, x.size(2), x.size(3)) : Tensor();
           Tensor ggy = rg ? conv2d_impl(x, gw, Tensor(), p, gy.size(2), gy.size(3)) : Tensor();
           return TensorList{gx, ggy};
         },
         {x, gy});
  return dw;
}

// ======================================================================================
// pooling and upsampling kernels (one [H, W] plane per (n, c); planes split over threads)
// ======================================================================================

struct PoolParams {
  int64_t kh, kw, sh, sw, ph, pw;
  int64_t H, W, OH, OW;
};

template <typename F>
void for_each_plane(int64_t planes, int64_t plane_work, const F& fn) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(plane_work, 1));
  kc::parallel_for(0, planes, grain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) fn(i);
  });
}

// Window rows [h0, h1) and columns [w0, w1) inside the image for output (oh, ow).
inline void window(const PoolParams& q, int64_t oh, int64_t ow, int64_t& h0, int64_t& h1, int64_t& w0, int64_t& w1) {
  h0 = oh * q.sh - q.ph;
  w0 = ow * q.sw - q.pw;
  h1 = std::min(h0 + q.kh, q.H);
  w1 = std::min(w0 + q.kw, q.W);
  h0 = std::max<int64_t>(h0, 0);
  w0 = std::max<int64_t>(w0, 0);
}

template <typename T>
void avg_pool_forward(const T* x, T* y, int64_t planes, const PoolParams& q) {
  const T inv = T(1) / static_cast<T>(q.kh * q.kw);
  for_each_plane(planes, q.OH * q.OW * q.kh * q.kw, [&](int64_t pl) {
    const T* xp = x + pl * q.H * q.W;
    T* yp = y + pl * q.OH * q.OW;
    for (int64_t oh = 0; oh < q.OH; ++oh)
      for (int64_t ow = 0; ow < q.OW; ++ow) {
        int64_t h0, h1, w0, w1;
        window(q, oh, ow, h0, h1, w0, w1);
        T acc = 0;
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) acc += xp[h * q.W + w];
        yp[oh * q.OW + ow] = acc * inv;
      }
  });
}

// gx = the adjoint of avg_pool_forward applied to gy (gx is overwritten).
template <typename T>
void avg_pool_backward(const T* gy, T* gx, int64_t planes, const PoolParams& q) {
  const T inv = T(1) / static_cast<T>(q.kh * q.kw);
  for_each_plane(planes, q.OH * q.OW * q.kh * q.kw, [&](int64_t pl) {
    T* xp = gx + pl * q.H * q.W;
    const T* yp = gy + pl * q.OH * q.OW;
    std::fill(xp, xp + q.H * q.W, T(0));
    for (int64_t oh = 0; oh < q.OH; ++oh)
      for (int64_t ow = 0; ow < q.OW; ++ow) {
        int64_t h0, h1, w0, w1;
        window(q, oh, ow, h0, h1, w0, w1);
        const T v = yp[oh * q.OW + ow] * inv;
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) xp[h * q.W + w] += v;
      }
  });
}

template <typename T>
void max_pool_forward(const T* x, T* y, int64_t* idx, int64_t planes, const PoolParams& q) {
  for_each_plane(planes, q.OH * q.OW * q.kh * q.kw, [&](int64_t pl) {
    const T* xp = x + pl * q.H * q.W;
    T* yp = y + pl * q.OH * q.OW;
    int64_t* ip = idx + pl * q.OH * q.OW;
    for (int64_t oh = 0; oh < q.OH; ++oh)
      for (int64_t ow = 0; ow < q.OW; ++ow) {
        int64_t h0, h1, w0, w1;
        window(q, oh, ow, h0, h1, w0, w1);
        // padding <= kernel / 2 guarantees a non-empty window
        int64_t best_i = h0 * q.W + w0;
        T best = xp[best_i];
        for (int64_t h = h0; h < h1 && !std::isnan(best); ++h)
          for (int64_t w = w0; w < w1; ++w) {
            const T v = xp[h * q.W + w];
            if (v > best || std::isnan(v)) {  // a NaN wins (and stays), as in PyTorch
              best = v;
              best_i = h * q.W + w;
              if (std::isnan(v)) break;
            }
          }
        yp[oh * q.OW + ow] = best;
        ip[oh * q.OW + ow] = best_i;
      }
  });
}

// dst[plane][idx[plane][o]] += src[plane][o] (dst has `dst_plane` elements per plane, overwritten).
template <typename T>
void plane_scatter(const T* src, const int64_t* idx, T* dst, int64_t planes, int64_t src_plane, int64_t dst_plane) {
  for_each_plane(planes, src_plane + dst_plane, [&](int64_t pl) {
    T* d = dst + pl * dst_plane;
    std::fill(d, d + dst_plane, T(0));
    const T* s = src + pl * src_plane;
    const int64_t* ip = idx + pl * src_plane;
    for (int64_t o = 0; o < src_plane; ++o) d[ip[o]] += s[o];
  });
}

// dst[plane][o] = src[plane][idx[plane][o]].
template <typename T>
void plane_gather(const T* src, const int64_t* idx, T* dst, int64_t planes, int64_t src_plane, int64_t dst_plane) {
  for_each_plane(planes, dst_plane, [&](int64_t pl) {
    const T* s = src + pl * src_plane;
    T* d = dst + pl * dst_plane;
    const int64_t* ip = idx + pl * dst_plane;
    for (int64_t o = 0; o < dst_plane; ++o) d[o] = s[ip[o]];
  });
}

// y [planes, H*r, W*r] = each pixel of x [planes, H, W] repeated r x r.
template <typename T>
void upsample_forward(const T* x, T* y, int64_t planes, int64_t H, int64_t W, int64_t r) {
  const int64_t OW = W * r;
  for_each_plane(planes, H * W * r * r, [&](int64_t pl) {
    const T* xp = x + pl * H * W;
    T* yp = y + pl * H * W * r * r;
    for (int64_t h = 0; h < H; ++h) {
      T* row = yp + h * r * OW;
      for (int64_t w = 0; w < W; ++w) {
        const T v = xp[h * W + w];
        for (int64_t j = 0; j < r; ++j) row[w * r + j] = v;
      }
      for (int64_t i = 1; i < r; ++i) std::copy(row, row + OW, row + i * OW);
    }
  });
}

// x [planes, H, W] = sums of the r x r blocks of y [planes, H*r, W*r] (the adjoint of upsampling).
template <typename T>
void upsample_backward(const T* y, T* x, int64_t planes, int64_t H, int64_t W, int64_t r) {
  const int64_t OW = W * r;
  for_each_plane(planes, H * W * r * r, [&](int64_t pl) {
    T* xp = x + pl * H * W;
    const T* yp = y + pl * H * W * r * r;
    std::fill(xp, xp + H * W, T(0));
    for (int64_t oh = 0; oh < H * r; ++oh) {
      T* xr = xp + (oh / r) * W;
      const T* yr = yp + oh * OW;
      for (int64_t ow = 0; ow < OW; ++ow) xr[ow / r] += yr[ow];
    }
  });
}

// ======================================================================================
// pooling and upsampling ops (recorded)
// ======================================================================================

Shape pooled_shape(const Tensor& x, const PoolParams& q) { return {x.size(0), x.size(1), q.OH, q.OW}; }

#if EMBER_WITH_CUDA
// The window as the GPU kernels take it (kernels/cuda/conv.h).
kernels::cuda::PoolGeometry pool_geometry(const PoolParams& q) {
  return {q.kh, q.kw, q.sh, q.sw, q.ph, q.pw, q.H, q.W, q.OH, q.OW};
}
#endif

Tensor avg_pool2d_backward_impl(const Tensor& gy, const Shape& in_shape, const PoolParams& q);

Tensor avg_pool2d_impl(const Tensor& x, const PoolParams& q) {
  Tensor y = Tensor::empty(pooled_shape(x, q), options_of(x));
  if (y.numel() > 0) {
    Tensor xc = contiguous_data(x);
    if (x.device().is_cuda()) {
      dispatch_floating(x.dtype(), "avg_pool2d", [](auto) {});  // the CPU's dtype error
#if EMBER_WITH_CUDA
      kernels::cuda::avg_pool2d(cuda::elem_type(x.dtype()), xc.device_data(), y.device_data(), x.size(0) * x.size(1),
                                pool_geometry(q), cuda::stream_of(x));
#endif
    } else {
      dispatch_floating(x.dtype(), "avg_pool2d", [&](auto tag) {
        using T = typename decltype(tag)::type;
        avg_pool_forward<T>(xc.data<T>(), y.data<T>(), x.size(0) * x.size(1), q);
      });
    }
  }
  record("avg_pool2d", {x}, y, [in_shape = x.sizes(), q](const TensorList& g, const TensorList&) {
    return TensorList{avg_pool2d_backward_impl(g[0], in_shape, q)};
  });
  return y;
}

// The adjoint of avg_pool2d; its own backward is avg_pool2d.
Tensor avg_pool2d_backward_impl(const Tensor& gy, const Shape& in_shape, const PoolParams& q) {
  Tensor gx = Tensor::empty(in_shape, options_of(gy));
  if (gx.numel() > 0) {
    Tensor gc = contiguous_data(gy);
    if (gy.device().is_cuda()) {
      dispatch_floating(gy.dtype(), "avg_pool2d_backward", [](auto) {});  // the CPU's dtype error
#if EMBER_WITH_CUDA
      kernels::cuda::avg_pool2d_backward(cuda::elem_type(gy.dtype()), gc.device_data(), gx.device_data(),
                                         in_shape[0] * in_shape[1], pool_geometry(q), cuda::stream_of(gy));
#endif
    } else {
      dispatch_floating(gy.dtype(), "avg_pool2d_backward", [&](auto tag) {
        using T = typename decltype(tag)::type;
        avg_pool_backward<T>(gc.data<T>(), gx.data<T>(), in_shape[0] * in_shape[1], q);
      });
    }
  }
  record("avg_pool2d_backward", {gy}, gx, [q](const TensorList& g, const TensorList&) {
    return TensorList{avg_pool2d_impl(g[0], q)};
  });
  return gx;
}

Tensor max_pool2d_gather(const Tensor& t, const Tensor& idx, const PoolParams& q);

// Scatters gy [N, C, OH, OW] to the saved argmax positions of a [N, C, H, W] input; its
// backward gathers from those positions. q is the pooling that made idx: the GPU kernel adds
// per input pixel over the windows that contain it (kernels/cuda/pool.cu), the CPU's loop
// needs only idx.
Tensor max_pool2d_backward_impl(const Tensor& gy, const Tensor& idx, const Shape& in_shape, const PoolParams& q) {
  Tensor gx = Tensor::empty(in_shape, options_of(gy));
  if (gx.numel() > 0) {
    Tensor gc = contiguous_data(gy);
    if (gy.device().is_cuda()) {
      dispatch_floating(gy.dtype(), "max_pool2d_backward", [](auto) {});  // the CPU's dtype error
#if EMBER_WITH_CUDA
      kernels::cuda::max_pool2d_scatter(cuda::elem_type(gy.dtype()), gc.device_data(),
                                        static_cast<const int64_t*>(idx.device_data()), gx.device_data(),
                                        in_shape[0] * in_shape[1], pool_geometry(q), cuda::stream_of(gy));
#endif
    } else {
      dispatch_floating(gy.dtype(), "max_pool2d_backward", [&](auto tag) {
        using T = typename decltype(tag)::type;
        plane_scatter<T>(gc.data<T>(), idx.data<int64_t>(), gx.data<T>(), in_shape[0] * in_shape[1],
                         idx.size(2) * idx.size(3), in_shape[2] * in_shape[3]);
      });
    }
  }
  record("max_pool2d_backward", {gy}, gx, [idx, q](const TensorList& g, const TensorList&) {
    return TensorList{max_pool2d_gather(g[0], idx, q)};
  }, {idx});
  return gx;
}

// t [N, C, H, W] read at idx [N, C, OH, OW]; its backward scatters.
Tensor max_pool2d_gather(const Tensor& t, const Tensor& idx, const PoolParams& q) {
  Tensor out = Tensor::empty(idx.sizes(), options_of(t));
  if (out.numel() > 0) {
    Tensor tc = contiguous_data(t);
    if (t.device().is_cuda()) {
      dispatch_floating(t.dtype(), "max_pool2d_gather", [](auto) {});  // the CPU's dtype error
#if EMBER_WITH_CUDA
      kernels::cuda::max_pool2d_gather(cuda::elem_type(t.dtype()), tc.device_data(),
                                       static_cast<const int64_t*>(idx.device_data()), out.device_data(),
                                       idx.size(0) * idx.size(1), pool_geometry(q), cuda::stream_of(t));
#endif
    } else {
      dispatch_floating(t.dtype(), "max_pool2d_gather", [&](auto tag) {
        using T = typename decltype(tag)::type;
        plane_gather<T>(tc.data<T>(), idx.data<int64_t>(), out.data<T>(), idx.size(0) * idx.size(1),
                        t.size(2) * t.size(3), idx.size(2) * idx.size(3));
      });
    }
  }
  record("max_pool2d_gather", {t}, out, [idx, q, in_shape = t.sizes()](const TensorList& g, const TensorList&) {
    return TensorList{max_pool2d_backward_impl(g[0], idx, in_shape, q)};
  }, {idx});
  return out;
}

Tensor upsample_nearest2d_backward_impl(const Tensor& gy, int64_t r);

Tensor upsample_nearest2d_impl(const Tensor& x, int64_t r) {
  const int64_t H = x.size(2), W = x.size(3);
  Tensor y = Tensor::empty({x.size(0), x.size(1), H * r, W * r}, options_of(x));
  if (y.numel() > 0) {
    Tensor xc = contiguous_data(x);
    if (x.device().is_cuda()) {
      dispatch_floating(x.dtype(), "upsample_nearest2d", [](auto) {});  // the CPU's dtype error
#if EMBER_WITH_CUDA
      kernels::cuda::upsample_nearest2d(cuda::elem_type(x.dtype()), xc.device_data(), y.device_data(),
                                        x.size(0) * x.size(1), H, W, r, cuda::stream_of(x));
#endif
    } else {
      dispatch_floating(x.dtype(), "upsample_nearest2d", [&](auto tag) {
        using T = typename decltype(tag)::type;
        upsample_forward<T>(xc.data<T>(), y.data<T>(), x.size(0) * x.size(1), H, W, r);
      });
    }
  }
  record("upsample_nearest2d", {x}, y, [r](const TensorList& g, const TensorList&) {
    return TensorList{upsample_nearest2d_backward_impl(g[0], r)};
  });
  return y;
}

// Sum pooling over r x r blocks (the adjoint of upsampling); its backward upsamples.
Tensor upsample_nearest2d_backward_impl(const Tensor& gy, int64_t r) {
  const int64_t H = gy.size(2) / r, W = gy.size(3) / r;
  Tensor gx = Tensor::empty({gy.size(0), gy.size(1), H, W}, options_of(gy));
  if (gx.numel() > 0) {
    Tensor gc = contiguous_data(gy);
    if (gy.device().is_cuda()) {
      dispatch_floating(gy.dtype(), "upsample_nearest2d_backward", [](auto) {});  // the CPU's dtype error
#if EMBER_WITH_CUDA
      kernels::cuda::upsample_nearest2d_backward(cuda::elem_type(gy.dtype()), gc.device_data(), gx.device_data(),
                                                 gy.size(0) * gy.size(1), H, W, r, cuda::stream_of(gy));
#endif
    } else {
      dispatch_floating(gy.dtype(), "upsample_nearest2d_backward", [&](auto tag) {
        using T = typename decltype(tag)::type;
        upsample_backward<T>(gc.data<T>(), gx.data<T>(), gy.size(0) * gy.size(1), H, W, r);
      });
    }
  }
  record("upsample_nearest2d_backward", {gy}, gx, [r](const TensorList& g, const TensorList&) {
    return TensorList{upsample_nearest2d_impl(g[0], r)};
  });
  return gx;
}

PoolParams pool_params(const char* op, const Tensor& x, Size2 kernel, Size2 stride, Size2 padding) {
  check_operands(op, {x});
  check_image(op, x);
  EMBER_CHECK(kernel[0] >= 1 && kernel[1] >= 1, op, ": kernel size must be >= 1, got ", size2_str(kernel));
  if (stride[0] == 0 && stride[1] == 0) stride = kernel;
  EMBER_CHECK(stride[0] >= 1 && stride[1] >= 1, op, ": stride must be >= 1 (or {0, 0} for stride = kernel), got ",
              size2_str(stride));
  EMBER_CHECK(padding[0] >= 0 && padding[1] >= 0 && padding[0] <= kernel[0] / 2 && padding[1] <= kernel[1] / 2, op,
              ": padding ", size2_str(padding), " must be >= 0 and at most half the kernel ", size2_str(kernel));
  PoolParams q{kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], x.size(2), x.size(3), 0, 0};
  EMBER_CHECK(q.H + 2 * q.ph >= q.kh && q.W + 2 * q.pw >= q.kw, op, ": kernel ", size2_str(kernel),
              " is larger than the padded input (input ", shape_str(x.sizes()), ", padding ", size2_str(padding), ")");
  q.OH = (q.H + 2 * q.ph - q.kh) / q.sh + 1;
  q.OW = (q.W + 2 * q.pw - q.kw) / q.sw + 1;
  return q;
}

// Runs f on x as a batch of one when x is [C, H, W], and drops that dim again.
template <typename F>
Tensor batched(const Tensor& x, const F& f) {
  if (x.defined() && x.dim() == 3) return f(x.unsqueeze(0)).squeeze(0);
  return f(x);
}

}  // namespace

// ======================================================================================
// public ops
// ======================================================================================

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Size2 stride, Size2 padding, Size2 dilation,
              int64_t groups) {
  return batched(x, [&](const Tensor& x4) {
    const char* op = "conv2d";
    check_operands(op, {x4, weight, bias});
    check_image(op, x4);
    EMBER_CHECK(weight.dim() == 4, op, ": expected a weight of shape [Cout, Cin/groups, kh, kw], got ",
                shape_str(weight.sizes()));
    check_params(op, stride, padding, dilation, groups);
    const int64_t Cin = x4.size(1), Cout = weight.size(0), kh = weight.size(2), kw = weight.size(3);
    EMBER_CHECK(Cin % groups == 0, op, ": input channels (", Cin, ") are not divisible by groups (", groups,
                "); input ", shape_str(x4.sizes()));
    EMBER_CHECK(Cout % groups == 0, op, ": output channels (weight ", shape_str(weight.sizes()),
                ") are not divisible by groups (", groups, ")");
    EMBER_CHECK(weight.size(1) * groups == Cin, op, ": weight ", shape_str(weight.sizes()), " with groups=", groups,
                " expects ", weight.size(1) * groups, " input channels, but the input ", shape_str(x4.sizes()),
                " has ", Cin);
    EMBER_CHECK(kh >= 1 && kw >= 1, op, ": empty kernel in weight ", shape_str(weight.sizes()));
    if (bias.defined())
      EMBER_CHECK(bias.dim() == 1 && bias.size(0) == Cout, op, ": bias ", shape_str(bias.sizes()),
                  " does not match weight ", shape_str(weight.sizes()), " (expected [", Cout, "])");
    const int64_t eh = dilation[0] * (kh - 1) + 1, ew = dilation[1] * (kw - 1) + 1;
    const int64_t Hp = x4.size(2) + 2 * padding[0], Wp = x4.size(3) + 2 * padding[1];
    EMBER_CHECK(eh <= Hp && ew <= Wp, op, ": kernel (", kh, "x", kw, ", dilation ", size2_str(dilation),
                ", extent ", eh, "x", ew, ") is larger than the padded input (", Hp, "x", Wp, "); input ",
                shape_str(x4.sizes()), ", weight ", shape_str(weight.sizes()), ", padding ", size2_str(padding));
    const int64_t OH = (Hp - eh) / stride[0] + 1, OW = (Wp - ew) / stride[1] + 1;
    trace::OpTimer timer(op, {x4, weight, bias});
    Tensor y = conv2d_impl(x4, weight, bias, ConvParams{stride, padding, dilation, groups}, OH, OW);
    timer.set_output(y);
    return y;
  });
}

Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Size2 stride, Size2 padding,
                        Size2 output_padding, int64_t groups, Size2 dilation) {
  return batched(x, [&](const Tensor& x4) {
    const char* op = "conv_transpose2d";
    check_operands(op, {x4, weight, bias});
    check_image(op, x4);
    EMBER_CHECK(weight.dim() == 4, op, ": expected a weight of shape [Cin, Cout/groups, kh, kw], got ",
                shape_str(weight.sizes()));
    check_params(op, stride, padding, dilation, groups);
    const int64_t Cin = x4.size(1), Cout = weight.size(1) * groups, kh = weight.size(2), kw = weight.size(3);
    EMBER_CHECK(Cin % groups == 0, op, ": input channels (", Cin, ") are not divisible by groups (", groups,
                "); input ", shape_str(x4.sizes()));
    EMBER_CHECK(weight.size(0) == Cin, op, ": weight ", shape_str(weight.sizes()), " expects ", weight.size(0),
                " input channels (weight is [Cin, Cout/groups, kh, kw]), but the input ", shape_str(x4.sizes()),
                " has ", Cin);
    EMBER_CHECK(kh >= 1 && kw >= 1, op, ": empty kernel in weight ", shape_str(weight.sizes()));
    for (int d = 0; d < 2; ++d)
      EMBER_CHECK(output_padding[d] >= 0 && (output_padding[d] < stride[d] || output_padding[d] < dilation[d]), op,
                  ": output_padding ", size2_str(output_padding), " must be >= 0 and smaller than stride ",
                  size2_str(stride), " or dilation ", size2_str(dilation));
    if (bias.defined())
      EMBER_CHECK(bias.dim() == 1 && bias.size(0) == Cout, op, ": bias ", shape_str(bias.sizes()),
                  " does not match weight ", shape_str(weight.sizes()), " with groups=", groups, " (expected [", Cout,
                  "])");
    const int64_t OH = (x4.size(2) - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + output_padding[0] + 1;
    const int64_t OW = (x4.size(3) - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + output_padding[1] + 1;
    EMBER_CHECK(x4.size(2) >= 1 && x4.size(3) >= 1 && OH >= 1 && OW >= 1, op, ": the output would be ", OH, "x", OW,
                " for input ", shape_str(x4.sizes()), ", weight ", shape_str(weight.sizes()), ", stride ",
                size2_str(stride), ", padding ", size2_str(padding), "; reduce the padding");
    trace::OpTimer timer(op, {x4, weight, bias});
    Tensor y = conv_transpose2d_impl(x4, weight, bias, ConvParams{stride, padding, dilation, groups}, OH, OW);
    timer.set_output(y);
    return y;
  });
}

Tensor conv2d_weight_grad(const Tensor& x, const Tensor& grad_out, Size2 kernel, Size2 stride, Size2 padding,
                          Size2 dilation, int64_t groups) {
  const char* op = "conv2d_weight_grad";
  check_operands(op, {x, grad_out});
  check_image(op, x);
  EMBER_CHECK(grad_out.dim() == 4 && grad_out.size(0) == x.size(0), op, ": grad_out ", shape_str(grad_out.sizes()),
              " must be [N, Cout, OH, OW] with the batch of the input ", shape_str(x.sizes()));
  check_params(op, stride, padding, dilation, groups);
  EMBER_CHECK(kernel[0] >= 1 && kernel[1] >= 1, op, ": kernel size must be >= 1, got ", size2_str(kernel));
  EMBER_CHECK(x.size(1) % groups == 0 && grad_out.size(1) % groups == 0, op, ": channels of input ",
              shape_str(x.sizes()), " and grad_out ", shape_str(grad_out.sizes()), " must be divisible by groups (",
              groups, ")");
  trace::OpTimer timer(op, {x, grad_out});
  Tensor dw = conv2d_weight_grad_impl(x, grad_out, kernel[0], kernel[1], ConvParams{stride, padding, dilation, groups});
  timer.set_output(dw);
  return dw;
}

Tensor avg_pool2d(const Tensor& x, Size2 kernel, Size2 stride, Size2 padding) {
  return batched(x, [&](const Tensor& x4) {
    PoolParams q = pool_params("avg_pool2d", x4, kernel, stride, padding);
    trace::OpTimer timer("avg_pool2d", {x4});
    Tensor y = avg_pool2d_impl(x4, q);
    timer.set_output(y);
    return y;
  });
}

std::pair<Tensor, Tensor> max_pool2d_with_indices(const Tensor& x, Size2 kernel, Size2 stride, Size2 padding) {
  const bool unbatched = x.defined() && x.dim() == 3;
  Tensor x4 = unbatched ? x.unsqueeze(0) : x;
  PoolParams q = pool_params("max_pool2d", x4, kernel, stride, padding);
  trace::OpTimer timer("max_pool2d", {x4});
  Shape out_shape = pooled_shape(x4, q);
  Tensor y = Tensor::empty(out_shape, options_of(x4));
  Tensor idx = Tensor::empty(out_shape, {.dtype = DType::i64, .device = x4.device()});
  if (y.numel() > 0) {
    Tensor xc = contiguous_data(x4);
    if (x4.device().is_cuda()) {
      dispatch_floating(x4.dtype(), "max_pool2d", [](auto) {});  // the CPU's dtype error
#if EMBER_WITH_CUDA
      kernels::cuda::max_pool2d(cuda::elem_type(x4.dtype()), xc.device_data(), y.device_data(),
                                static_cast<int64_t*>(idx.device_data()), x4.size(0) * x4.size(1), pool_geometry(q),
                                cuda::stream_of(x4));
#endif
    } else {
      dispatch_floating(x4.dtype(), "max_pool2d", [&](auto tag) {
        using T = typename decltype(tag)::type;
        max_pool_forward<T>(xc.data<T>(), y.data<T>(), idx.data<int64_t>(), x4.size(0) * x4.size(1), q);
      });
    }
  }
  timer.set_output(y);
  record("max_pool2d", {x4}, y, [idx, q, in_shape = x4.sizes()](const TensorList& g, const TensorList&) {
    return TensorList{max_pool2d_backward_impl(g[0], idx, in_shape, q)};
  }, {idx});
  if (unbatched) return {y.squeeze(0), idx.squeeze(0)};
  return {y, idx};
}

Tensor max_pool2d(const Tensor& x, Size2 kernel, Size2 stride, Size2 padding) {
  return max_pool2d_with_indices(x, kernel, stride, padding).first;
}

Tensor upsample_nearest2d(const Tensor& x, int64_t scale_factor) {
  return batched(x, [&](const Tensor& x4) {
    const char* op = "upsample_nearest2d";
    check_operands(op, {x4});
    check_image(op, x4);
    EMBER_CHECK(scale_factor >= 1, op, ": scale_factor must be >= 1, got ", scale_factor);
    trace::OpTimer timer(op, {x4});
    Tensor y = upsample_nearest2d_impl(x4, scale_factor);
    timer.set_output(y);
    return y;
  });
}

Tensor pixel_shuffle(const Tensor& x, int64_t r) {
  EMBER_CHECK(x.defined() && x.dim() >= 3, "pixel_shuffle: expected an input [..., C*r*r, H, W], got ",
              x.defined() ? shape_str(x.sizes()) : std::string("an undefined tensor"));
  EMBER_CHECK(r >= 1, "pixel_shuffle: upscale_factor must be >= 1, got ", r);
  const int64_t C = x.size(-3), H = x.size(-2), W = x.size(-1);
  EMBER_CHECK(C % (r * r) == 0, "pixel_shuffle: channels (", C, ") of input ", shape_str(x.sizes()),
              " are not divisible by upscale_factor^2 (", r * r, ")");
  Shape lead(x.sizes().begin(), x.sizes().end() - 3);
  const int64_t L = static_cast<int64_t>(lead.size());
  // [..., C', r, r, H, W] -> [..., C', H, r, W, r] -> [..., C', H*r, W*r]
  Shape split = lead;
  split.insert(split.end(), {C / (r * r), r, r, H, W});
  Shape perm;
  for (int64_t i = 0; i < L; ++i) perm.push_back(i);
  perm.insert(perm.end(), {L, L + 3, L + 1, L + 4, L + 2});
  Shape out = lead;
  out.insert(out.end(), {C / (r * r), H * r, W * r});
  return x.reshape(split).permute(perm).reshape(out);
}

Tensor pixel_unshuffle(const Tensor& x, int64_t r) {
  EMBER_CHECK(x.defined() && x.dim() >= 3, "pixel_unshuffle: expected an input [..., C, H*r, W*r], got ",
              x.defined() ? shape_str(x.sizes()) : std::string("an undefined tensor"));
  EMBER_CHECK(r >= 1, "pixel_unshuffle: downscale_factor must be >= 1, got ", r);
  const int64_t C = x.size(-3), H = x.size(-2), W = x.size(-1);
  EMBER_CHECK(H % r == 0 && W % r == 0, "pixel_unshuffle: height and width of input ", shape_str(x.sizes()),
              " are not divisible by downscale_factor (", r, ")");
  Shape lead(x.sizes().begin(), x.sizes().end() - 3);
  const int64_t L = static_cast<int64_t>(lead.size());
  // [..., C, H', r, W', r] -> [..., C, r, r, H', W'] -> [..., C*r*r, H', W']
  Shape split = lead;
  split.insert(split.end(), {C, H / r, r, W / r, r});
  Shape perm;
  for (int64_t i = 0; i < L; ++i) perm.push_back(i);
  perm.insert(perm.end(), {L, L + 2, L + 4, L + 1, L + 3});
  Shape out = lead;
  out.insert(out.end(), {C * r * r, H / r, W / r});
  return x.reshape(split).permute(perm).reshape(out);
}

}  // namespace ember
