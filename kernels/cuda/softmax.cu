// softmax / log_softmax along the middle dim of a contiguous [outer, n, inner] tensor, with the
// CPU's arithmetic (ops/attention.cpp): subtract the max, sum the exponentials in f64, scale
// (or subtract the log of the sum).
//
// Two shapes, as on the CPU:
//  - inner == 1 (softmax over the last dim, attention's case): one block per row; the threads
//    stride through the row (coalesced), the max and the sum are block reductions, and the row
//    is read three times (max, sum, write), which stays in L2 for rows of attention's size;
//  - inner > 1 (a leading dim): one thread per (outer, inner) column walking down n; threads
//    next to each other read neighbouring columns, so each step of the walk is coalesced.
// Memory-bound either way; a single-pass online softmax is the attention kernel's business.
#include <cmath>

#include "ember/engine/error.h"
#include "ember/kernels/cuda/block_reduce.cuh"
#include "ember/kernels/cuda/map.cuh"
#include "ember/kernels/cuda/math.cuh"
#include "ember/kernels/cuda/softmax.h"

namespace ember::kernels::cuda {

namespace {

// A max of -inf (every entry -inf) or NaN shifts by 0, so the arithmetic yields NaN / -inf
// rather than a made-up distribution, as on the CPU.
template <typename T>
__device__ __forceinline__ T usable_shift(T m) {
  return (m != m || m == -INFINITY) ? T(0) : m;
}

template <typename T>
__global__ void softmax_rows_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t outer, int64_t n, bool log) {
  for (int64_t r = blockIdx.x; r < outer; r += gridDim.x) {  // uniform over the block
    const T* xr = x + r * n;
    T* yr = y + r * n;
    T m = -INFINITY;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = (xr[j] > m || xr[j] != xr[j]) ? xr[j] : m;
    m = usable_shift(block_extreme(m, true));
    double s = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += static_cast<double>(m_exp(static_cast<T>(xr[j] - m)));
    s = block_sum(s);
    if (log) {
      const T ls = static_cast<T>(::log(s));
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = xr[j] - m - ls;
    } else {
      const T inv = static_cast<T>(1.0 / s);
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = m_exp(static_cast<T>(xr[j] - m)) * inv;
    }
  }
}

template <typename T>
__global__ void softmax_columns_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t outer, int64_t n,
                                       int64_t inner, bool log) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < outer * inner; c += step) {
    const int64_t o = c / inner, i = c % inner;
    const T* xc = x + o * n * inner + i;
    T* yc = y + o * n * inner + i;
    T m = -INFINITY;
    for (int64_t j = 0; j < n; ++j) m = (xc[j * inner] > m || xc[j * inner] != xc[j * inner]) ? xc[j * inner] : m;
    m = usable_shift(m);
    double s = 0;
    for (int64_t j = 0; j < n; ++j) s += static_cast<double>(m_exp(static_cast<T>(xc[j * inner] - m)));
    if (log) {
      const T shift = m + static_cast<T>(::log(s));
      for (int64_t j = 0; j < n; ++j) yc[j * inner] = xc[j * inner] - shift;
    } else {
      const T inv = static_cast<T>(1.0 / s);
      for (int64_t j = 0; j < n; ++j) yc[j * inner] = m_exp(static_cast<T>(xc[j * inner] - m)) * inv;
    }
  }
}

template <typename T>
void launch(const void* x, void* y, int64_t outer, int64_t n, int64_t inner, bool log, cudaStream_t st) {
  const T* xp = static_cast<const T*>(x);
  T* yp = static_cast<T*>(y);
  if (inner == 1) {
    // Short rows waste most of a 256-thread block; 64 threads still cover a row of 64 in one step.
    const int threads = n <= 64 ? 64 : (n <= 128 ? 128 : kThreads);
    const unsigned blocks = static_cast<unsigned>(outer < (1 << 20) ? outer : (1 << 20));
    softmax_rows_kernel<T><<<blocks, threads, 0, st>>>(xp, yp, outer, n, log);
  } else {
    softmax_columns_kernel<T><<<blocks_for(outer * inner), kThreads, 0, st>>>(xp, yp, outer, n, inner, log);
  }
}

}  // namespace

void softmax(ElemType t, const void* x, void* y, int64_t outer, int64_t n, int64_t inner, bool log, void* stream) {
  if (outer == 0 || n == 0 || inner == 0) return;
  auto st = static_cast<cudaStream_t>(stream);
  if (t == ElemType::f32) launch<float>(x, y, outer, n, inner, log, st);
  else if (t == ElemType::f64) launch<double>(x, y, outer, n, inner, log, st);
  else EMBER_FAIL(log ? "log_softmax" : "softmax", ": the CUDA kernel takes f32 or f64");
  EMBER_CUDA_LAUNCHED(log ? "log_softmax" : "softmax");
}

}  // namespace ember::kernels::cuda
