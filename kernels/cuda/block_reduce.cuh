// Block-wide reductions shared by the row kernels (reductions, softmax, GroupNorm): the threads combine in
// registers, then across each warp with shuffles, then across the warps through one small
// shared array. Every thread gets the result. Blocks of up to 1024 threads (32 warps).
#pragma once
#include <cuda_runtime.h>

#include <type_traits>

namespace ember::kernels::cuda {

template <typename T>
__device__ __forceinline__ bool is_nan(T v) {
  if constexpr (std::is_floating_point_v<T>) return v != v;
  else return false;
}

// f(v) over the block, f associative with identity `id`; blockDim.x a multiple of 32.
template <typename F>
__device__ __forceinline__ double block_combine(double v, F f, double id) {
  __shared__ double part[32];
  for (int o = 16; o > 0; o >>= 1) v = f(v, __shfl_down_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  __syncthreads();  // part[] may still be read by a previous call
  if (lane == 0) part[warp] = v;
  __syncthreads();
  double r = id;
  for (int w = 0; w < warps; ++w) r = f(r, part[w]);
  return r;
}

__device__ __forceinline__ double block_sum(double v) {
  return block_combine(v, [](double a, double b) { return a + b; }, 0.0);
}
__device__ __forceinline__ double block_product(double v) {
  return block_combine(v, [](double a, double b) { return a * b; }, 1.0);
}

// The extreme of v over the block (NaN wins, as on the CPU).
template <typename T>
__device__ __forceinline__ T block_extreme(T v, bool is_max) {
  __shared__ T part[32];
  auto pick = [is_max](T a, T b) { return (is_nan(a) || (!is_nan(b) && (is_max ? a >= b : a <= b))) ? a : b; };
  for (int o = 16; o > 0; o >>= 1) v = pick(v, __shfl_down_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  T r = part[0];
  for (int w = 1; w < warps; ++w) r = pick(r, part[w]);
  return r;
}

}  // namespace ember::kernels::cuda
