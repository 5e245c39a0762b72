// GroupNorm with its common neighbours fused in: the per-(sample, channel) bias added before it
// (the U-Net's time embedding), the per-channel affine, and SiLU after it. Unfused, that chain
// is an add, a normalization of several launches and a SiLU: four or more round trips through
// HBM for a tensor that is read once and written once here.
//
// Forward: one block per (sample, group). A group of the U-Net's GroupNorm(32) is C/32 channels
// of H*W values (4 x 1024 for C128 at 32x32: 16 KB in f32), so the block reads it once into
// shared memory, takes the mean and then the squared deviations from there (the exact two-pass
// variance, with no second HBM read), and writes y. Groups too large for the shared-memory
// budget are read again from global memory (L2 mostly) instead. Sums are carried in f64, as the
// CPU's statistics are.
//
// Backward (first order; under create_graph ops/norm.cpp differentiates the composite): one
// block per (sample, group) again, walking the group channel by channel so that per-channel
// sums are block reductions:
//   gz = dy * silu'(z) (or dy),  gh = gz * w[c],  xhat = (u - mean) * rstd
//   dx = rstd * (gh - mean_g(gh) - xhat * mean_g(gh * xhat))
//   dt[n, c] = sum_s dx,  dw[c] = sum_{n,s} gz * xhat,  db[c] = sum_{n,s} gz
// The first pass gathers the group means and the per-sample parts of dw and db (summed over N
// by the caller with one small reduction), the second writes dx and dt. dy and x are read
// twice; the second read of a 16 KB group hits L2.
#include "ember/engine/error.h"
#include "ember/kernels/cuda/block_reduce.cuh"
#include "ember/kernels/cuda/group_norm.h"
#include "ember/kernels/cuda/map.cuh"
#include "ember/kernels/cuda/math.cuh"

namespace ember::kernels::cuda {

namespace {

constexpr int kMaxCacheBytes = 96 * 1024;  // shared memory for one group, opted in above 48 KB

template <typename T>
struct Params {
  const T* x;
  const T* bias_nc;  // [N, C] or null
  const T* w;        // [C] or null
  const T* b;        // [C] or null
  int64_t N, C, S, G;
  double eps;
  bool silu;
};

template <typename T>
__device__ __forceinline__ T channel_value(const T* p, int64_t i, T fallback) {
  return p ? p[i] : fallback;
}

template <typename T, bool CACHED>
__global__ void group_norm_forward_kernel(Params<T> p, T* __restrict__ y, T* __restrict__ mean_out,
                                          T* __restrict__ rstd_out) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* cache = reinterpret_cast<T*>(smem);
  const int64_t Cg = p.C / p.G, M = Cg * p.S;
  for (int64_t ng = blockIdx.x; ng < p.N * p.G; ng += gridDim.x) {  // uniform over the block
    const int64_t n = ng / p.G, c0 = (ng % p.G) * Cg, base = ng * M;
    auto input = [&](int64_t i) {  // u = x + t[n, c] at element i of the group
      const T t = channel_value(p.bias_nc, n * p.C + c0 + i / p.S, T(0));
      return p.x[base + i] + t;
    };
    double s = 0;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
      const T u = input(i);
      if constexpr (CACHED) cache[i] = u;
      s += static_cast<double>(u);
    }
    const double mean = block_sum(s) / static_cast<double>(M);
    double q = 0;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
      const double d = static_cast<double>(CACHED ? cache[i] : input(i)) - mean;
      q += d * d;
    }
    const double rstd = 1.0 / ::sqrt(block_sum(q) / static_cast<double>(M) + p.eps);
    if (threadIdx.x == 0) {
      mean_out[ng] = static_cast<T>(mean);
      rstd_out[ng] = static_cast<T>(rstd);
    }
    const T m = static_cast<T>(mean), r = static_cast<T>(rstd);
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
      const int64_t c = c0 + i / p.S;
      const T u = CACHED ? cache[i] : input(i);
      const T z = (u - m) * r * channel_value(p.w, c, T(1)) + channel_value(p.b, c, T(0));
      y[base + i] = p.silu ? z * sigmoid_of(z) : z;
    }
    __syncthreads();  // the cache is refilled by the next group of this block
  }
}

template <typename T>
struct Grads {
  const T* mean;
  const T* rstd;
  const T* dy;
  T* dx;        // or null
  T* dbias_nc;  // or null
  T* dw_part;   // [N, C] or null
  T* db_part;   // [N, C] or null
};

template <typename T>
__global__ void group_norm_backward_kernel(Params<T> p, Grads<T> g) {
  const int64_t Cg = p.C / p.G, S = p.S, M = Cg * S;
  for (int64_t ng = blockIdx.x; ng < p.N * p.G; ng += gridDim.x) {
    const int64_t n = ng / p.G, c0 = (ng % p.G) * Cg, base = ng * M;
    const T m = g.mean[ng], r = g.rstd[ng];
    // xhat and gz of element s of channel c (row `row` = n * C + c)
    auto at = [&](int64_t c, int64_t s, T& xhat, T& gz) {
      const int64_t row = n * p.C + c, i = base + (c - c0) * S + s;
      xhat = (p.x[i] + channel_value(p.bias_nc, row, T(0)) - m) * r;
      gz = g.dy[i];
      if (p.silu) {
        const T z = xhat * channel_value(p.w, c, T(1)) + channel_value(p.b, c, T(0));
        const T sg = sigmoid_of(z);
        gz *= sg * (T(1) + z * (T(1) - sg));
      }
    };
    double sum_gh = 0, sum_ghx = 0;
    for (int64_t c = c0; c < c0 + Cg; ++c) {
      const T wc = channel_value(p.w, c, T(1));
      double gzx = 0, gzs = 0;
      for (int64_t s = threadIdx.x; s < S; s += blockDim.x) {
        T xhat, gz;
        at(c, s, xhat, gz);
        gzx += static_cast<double>(gz * xhat);
        gzs += static_cast<double>(gz);
      }
      sum_gh += gzs * static_cast<double>(wc);
      sum_ghx += gzx * static_cast<double>(wc);
      if (g.dw_part) {
        const double v = block_sum(gzx);
        if (threadIdx.x == 0) g.dw_part[n * p.C + c] = static_cast<T>(v);
      }
      if (g.db_part) {
        const double v = block_sum(gzs);
        if (threadIdx.x == 0) g.db_part[n * p.C + c] = static_cast<T>(v);
      }
    }
    if (g.dx || g.dbias_nc) {
      const T m1 = static_cast<T>(block_sum(sum_gh) / static_cast<double>(M));
      const T m2 = static_cast<T>(block_sum(sum_ghx) / static_cast<double>(M));
      for (int64_t c = c0; c < c0 + Cg; ++c) {
        const T wc = channel_value(p.w, c, T(1));
        double dt = 0;
        for (int64_t s = threadIdx.x; s < S; s += blockDim.x) {
          T xhat, gz;
          at(c, s, xhat, gz);
          const T dx = r * (gz * wc - m1 - xhat * m2);
          if (g.dx) g.dx[base + (c - c0) * S + s] = dx;
          dt += static_cast<double>(dx);
        }
        if (g.dbias_nc) {
          const double v = block_sum(dt);
          if (threadIdx.x == 0) g.dbias_nc[n * p.C + c] = static_cast<T>(v);
        }
      }
    }
    __syncthreads();
  }
}

// Enough threads for the work of one (sample, group) step, in whole warps, at most 256.
int threads_for(int64_t work) {
  const int64_t w = (work + 31) / 32 * 32;
  return static_cast<int>(w < 32 ? 32 : (w > kThreads ? kThreads : w));
}

unsigned groups_grid(int64_t groups) { return static_cast<unsigned>(groups < (1 << 20) ? groups : (1 << 20)); }

template <typename T>
Params<T> params_of(const GroupNormShape& s, const void* x, const void* bias_nc, const void* w, const void* b) {
  return {static_cast<const T*>(x), static_cast<const T*>(bias_nc), static_cast<const T*>(w), static_cast<const T*>(b),
          s.N, s.C, s.S, s.G, s.eps, s.silu};
}

template <typename T>
void forward(const GroupNormShape& s, const void* x, const void* bias_nc, const void* w, const void* b, void* y,
             void* mean, void* rstd, cudaStream_t st) {
  const Params<T> p = params_of<T>(s, x, bias_nc, w, b);
  const int64_t M = (s.C / s.G) * s.S;
  const int64_t bytes = M * static_cast<int64_t>(sizeof(T));
  const unsigned grid = groups_grid(s.N * s.G);
  const int threads = threads_for(M);
  if (bytes <= kMaxCacheBytes) {
    // Allow the cache past the default 48 KB. The attribute belongs to the current device's
    // context, so it is set at each launch (a host-side call, no GPU work).
    check_cuda(static_cast<int>(cudaFuncSetAttribute(group_norm_forward_kernel<T, true>,
                                                     cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxCacheBytes)),
               "cudaFuncSetAttribute", "group_norm_forward");
    group_norm_forward_kernel<T, true><<<grid, threads, static_cast<size_t>(bytes), st>>>(
        p, static_cast<T*>(y), static_cast<T*>(mean), static_cast<T*>(rstd));
  } else {
    group_norm_forward_kernel<T, false><<<grid, threads, 0, st>>>(p, static_cast<T*>(y), static_cast<T*>(mean),
                                                                   static_cast<T*>(rstd));
  }
}

template <typename T>
void backward(const GroupNormShape& s, const void* x, const void* bias_nc, const void* w, const void* b,
              const void* mean, const void* rstd, const void* dy, void* dx, void* dbias_nc, void* dw_part,
              void* db_part, cudaStream_t st) {
  const Params<T> p = params_of<T>(s, x, bias_nc, w, b);
  const Grads<T> g{static_cast<const T*>(mean), static_cast<const T*>(rstd), static_cast<const T*>(dy),
                   static_cast<T*>(dx),         static_cast<T*>(dbias_nc),    static_cast<T*>(dw_part),
                   static_cast<T*>(db_part)};
  group_norm_backward_kernel<T><<<groups_grid(s.N * s.G), threads_for(s.S), 0, st>>>(p, g);
}

void check_shape(const GroupNormShape& s) {
  EMBER_CHECK(s.N >= 0 && s.S >= 0 && s.G > 0 && s.C % s.G == 0, "group_norm (CUDA): bad shape N ", s.N, ", C ", s.C,
              ", S ", s.S, ", G ", s.G);
}

}  // namespace

void group_norm_forward(ElemType t, const GroupNormShape& s, const void* x, const void* bias_nc, const void* w,
                        const void* b, void* y, void* mean, void* rstd, void* stream) {
  check_shape(s);
  if (s.N * s.C * s.S == 0) return;
  auto st = static_cast<cudaStream_t>(stream);
  if (t == ElemType::f32) forward<float>(s, x, bias_nc, w, b, y, mean, rstd, st);
  else if (t == ElemType::f64) forward<double>(s, x, bias_nc, w, b, y, mean, rstd, st);
  else EMBER_FAIL("group_norm: the CUDA kernel takes f32 or f64");
  EMBER_CUDA_LAUNCHED("group_norm_forward");
}

void group_norm_backward(ElemType t, const GroupNormShape& s, const void* x, const void* bias_nc, const void* w,
                         const void* b, const void* mean, const void* rstd, const void* dy, void* dx, void* dbias_nc,
                         void* dw_part, void* db_part, void* stream) {
  check_shape(s);
  if (s.N * s.C * s.S == 0) return;
  auto st = static_cast<cudaStream_t>(stream);
  if (t == ElemType::f32) backward<float>(s, x, bias_nc, w, b, mean, rstd, dy, dx, dbias_nc, dw_part, db_part, st);
  else if (t == ElemType::f64) backward<double>(s, x, bias_nc, w, b, mean, rstd, dy, dx, dbias_nc, dw_part, db_part, st);
  else EMBER_FAIL("group_norm backward: the CUDA kernel takes f32 or f64");
  EMBER_CUDA_LAUNCHED("group_norm_backward");
}

}  // namespace ember::kernels::cuda
