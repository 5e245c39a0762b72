// GroupNorm with its common neighbours fused in: the per-(sample, channel) bias added before it
// (the U-Net's time embedding), the per-channel affine, and SiLU after it. Unfused, that chain
// is an add, a normalization of several launches and a SiLU: four or more round trips through
// HBM for a tensor that is read once and written once here.
//
// Forward: one block per (sample, group). A group of the U-Net's GroupNorm(32) is C/32 channels
// of H*W values (4 x 1024 for C128 at 32x32: 16 KB in f32), so the block reads it once into
// shared memory, takes the mean and then the squared deviations from there (the exact two-pass
// variance, with no second HBM read), and writes y, 16 bytes per load and store where H*W
// allows. Groups too large for the shared-memory
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
// twice; the second read of a 16 KB group hits L2. 16-byte vectors where H*W and the pointers
// allow, as in the forward.
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

// Vectors of V elements (16 bytes: V = 4 in f32) where every channel's run of S values is a
// whole number of vectors and x and y are 16-byte aligned, else V = 1. The loops walk vectors:
// one 16-byte load or store each, and the channel of a vector (for the bias, w and b) found by
// one 32-bit division per vector, where element-wise 64-bit divisions cost more than the bytes.
template <typename T, bool CACHED, int V>
__global__ void group_norm_forward_kernel(Params<T> p, T* __restrict__ y, T* __restrict__ mean_out,
                                          T* __restrict__ rstd_out) {
  using Vt = Vec<T, V>;
  extern __shared__ __align__(16) unsigned char smem[];
  Vt* cache = reinterpret_cast<Vt*>(smem);
  const int64_t Cg = p.C / p.G, M = Cg * p.S;
  const uint32_t per_channel = static_cast<uint32_t>(p.S / V), vectors = static_cast<uint32_t>(M / V);
  for (int64_t ng = blockIdx.x; ng < p.N * p.G; ng += gridDim.x) {  // uniform over the block
    const int64_t n = ng / p.G, c0 = (ng % p.G) * Cg, base = ng * M;
    const Vt* xs = reinterpret_cast<const Vt*>(p.x + base);
    auto input = [&](uint32_t i) {  // u = x + t[n, c] for vector i of the group
      Vt u = xs[i];
      if (p.bias_nc) {
        const T t = p.bias_nc[n * p.C + c0 + i / per_channel];
#pragma unroll
        for (int k = 0; k < V; ++k) u.v[k] += t;
      }
      return u;
    };
    double s = 0;
    for (uint32_t i = threadIdx.x; i < vectors; i += blockDim.x) {
      const Vt u = input(i);
      if constexpr (CACHED) cache[i] = u;
#pragma unroll
      for (int k = 0; k < V; ++k) s += static_cast<double>(u.v[k]);
    }
    const double mean = block_sum(s) / static_cast<double>(M);
    double q = 0;
    for (uint32_t i = threadIdx.x; i < vectors; i += blockDim.x) {
      const Vt u = CACHED ? cache[i] : input(i);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const double d = static_cast<double>(u.v[k]) - mean;
        q += d * d;
      }
    }
    const double rstd = 1.0 / ::sqrt(block_sum(q) / static_cast<double>(M) + p.eps);
    if (threadIdx.x == 0) {
      mean_out[ng] = static_cast<T>(mean);
      rstd_out[ng] = static_cast<T>(rstd);
    }
    const T m = static_cast<T>(mean), r = static_cast<T>(rstd);
    Vt* ys = reinterpret_cast<Vt*>(y + base);
    for (uint32_t i = threadIdx.x; i < vectors; i += blockDim.x) {
      const int64_t c = c0 + i / per_channel;
      const T wc = channel_value(p.w, c, T(1)), bc = channel_value(p.b, c, T(0));
      const Vt u = CACHED ? cache[i] : input(i);
      Vt out;
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const T z = (u.v[k] - m) * r * wc + bc;
        out.v[k] = p.silu ? z * sigmoid_of(z) : z;
      }
      ys[i] = out;
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

template <typename T, int V>
__global__ void group_norm_backward_kernel(Params<T> p, Grads<T> g) {
  using Vt = Vec<T, V>;
  const int64_t Cg = p.C / p.G, S = p.S, M = Cg * S;
  const int64_t per_channel = S / V;  // vectors (as in the forward: V = 1 unless S and the pointers allow)
  for (int64_t ng = blockIdx.x; ng < p.N * p.G; ng += gridDim.x) {
    const int64_t n = ng / p.G, c0 = (ng % p.G) * Cg, base = ng * M;
    const T m = g.mean[ng], r = g.rstd[ng];
    // xhat and gz of vector j of channel c (row `row` = n * C + c)
    auto at = [&](int64_t c, int64_t j, Vt& xhat, Vt& gz) {
      const int64_t row = n * p.C + c, i = base + (c - c0) * S;
      const Vt x = reinterpret_cast<const Vt*>(p.x + i)[j];
      gz = reinterpret_cast<const Vt*>(g.dy + i)[j];
      const T t = channel_value(p.bias_nc, row, T(0)), wc = channel_value(p.w, c, T(1)), bc = channel_value(p.b, c, T(0));
#pragma unroll
      for (int k = 0; k < V; ++k) {
        xhat.v[k] = (x.v[k] + t - m) * r;
        if (p.silu) {
          const T z = xhat.v[k] * wc + bc;
          const T sg = sigmoid_of(z);
          gz.v[k] *= sg * (T(1) + z * (T(1) - sg));
        }
      }
    };
    double sum_gh = 0, sum_ghx = 0;
    for (int64_t c = c0; c < c0 + Cg; ++c) {
      const T wc = channel_value(p.w, c, T(1));
      double gzx = 0, gzs = 0;
      for (int64_t j = threadIdx.x; j < per_channel; j += blockDim.x) {
        Vt xhat, gz;
        at(c, j, xhat, gz);
#pragma unroll
        for (int k = 0; k < V; ++k) {
          gzx += static_cast<double>(gz.v[k] * xhat.v[k]);
          gzs += static_cast<double>(gz.v[k]);
        }
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
        Vt* dx_c = g.dx ? reinterpret_cast<Vt*>(g.dx + base + (c - c0) * S) : nullptr;
        double dt = 0;
        for (int64_t j = threadIdx.x; j < per_channel; j += blockDim.x) {
          Vt xhat, gz, dx;
          at(c, j, xhat, gz);
#pragma unroll
          for (int k = 0; k < V; ++k) {
            dx.v[k] = r * (gz.v[k] * wc - m1 - xhat.v[k] * m2);
            dt += static_cast<double>(dx.v[k]);
          }
          if (dx_c) dx_c[j] = dx;
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

template <typename T, int V>
void launch_forward(const Params<T>& p, int64_t M, T* y, T* mean, T* rstd, cudaStream_t st) {
  const int64_t bytes = M * static_cast<int64_t>(sizeof(T));
  const unsigned grid = groups_grid(p.N * p.G);
  const int threads = threads_for(M / V);
  if (bytes <= kMaxCacheBytes) {
    // Allow the cache past the default 48 KB. The attribute belongs to the current device's
    // context, so it is set at each launch (a host-side call, no GPU work).
    check_cuda(static_cast<int>(cudaFuncSetAttribute(group_norm_forward_kernel<T, true, V>,
                                                     cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxCacheBytes)),
               "cudaFuncSetAttribute", "group_norm_forward");
    group_norm_forward_kernel<T, true, V><<<grid, threads, static_cast<size_t>(bytes), st>>>(p, y, mean, rstd);
  } else {
    group_norm_forward_kernel<T, false, V><<<grid, threads, 0, st>>>(p, y, mean, rstd);
  }
}

template <typename T>
void forward(const GroupNormShape& s, const void* x, const void* bias_nc, const void* w, const void* b, void* y,
             void* mean, void* rstd, cudaStream_t st) {
  const Params<T> p = params_of<T>(s, x, bias_nc, w, b);
  const int64_t M = (s.C / s.G) * s.S;
  EMBER_CHECK(M < (int64_t{1} << 31), "group_norm (CUDA): a group of ", M, " elements (C/G = ", s.C / s.G, ", H*W = ",
              s.S, ") is over the kernel's 2^31; use fewer channels per group");
  constexpr int V = static_cast<int>(16 / sizeof(T));
  const bool whole_vectors = s.S % V == 0 && aligned_16({x, y});
  if (whole_vectors) launch_forward<T, V>(p, M, static_cast<T*>(y), static_cast<T*>(mean), static_cast<T*>(rstd), st);
  else launch_forward<T, 1>(p, M, static_cast<T*>(y), static_cast<T*>(mean), static_cast<T*>(rstd), st);
}

template <typename T>
void backward(const GroupNormShape& s, const void* x, const void* bias_nc, const void* w, const void* b,
              const void* mean, const void* rstd, const void* dy, void* dx, void* dbias_nc, void* dw_part,
              void* db_part, cudaStream_t st) {
  const Params<T> p = params_of<T>(s, x, bias_nc, w, b);
  const Grads<T> g{static_cast<const T*>(mean), static_cast<const T*>(rstd), static_cast<const T*>(dy),
                   static_cast<T*>(dx),         static_cast<T*>(dbias_nc),    static_cast<T*>(dw_part),
                   static_cast<T*>(db_part)};
  constexpr int V = static_cast<int>(16 / sizeof(T));
  const bool whole_vectors = s.S % V == 0 && aligned_16({x, dy, dx});  // dx may be null: aligned
  if (whole_vectors) group_norm_backward_kernel<T, V><<<groups_grid(s.N * s.G), threads_for(s.S / V), 0, st>>>(p, g);
  else group_norm_backward_kernel<T, 1><<<groups_grid(s.N * s.G), threads_for(s.S), 0, st>>>(p, g);
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
