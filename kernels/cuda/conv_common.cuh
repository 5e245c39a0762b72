// What conv.cu and pool.cu share: grid-stride indexing in 64 bits, the f32/f64 dispatch, and
// a launch that checks itself. Every kernel of the two files is one thread per element of the
// tensor it writes, so each needs only a flat element count to size its grid.
#pragma once
#include <type_traits>

#include "ember/engine/error.h"
#include "ember/kernels/cuda/map.cuh"

namespace ember::kernels::cuda::conv_detail {

__device__ __forceinline__ int64_t first_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_step() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// a * b rounded once, never fused into a following add: the CPU computes the product first
// (ops/conv.cpp's pooling backwards), and fusing would change the last bit.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

// Calls f(std::type_identity<float or double>{}); the ops refuse other dtypes first, with the
// CPU's message, so reaching the failure here is a bug in the caller.
template <typename F>
void dispatch_float(ElemType t, const char* op, F&& f) {
  switch (t) {
    case ElemType::f32: f(std::type_identity<float>{}); return;
    case ElemType::f64: f(std::type_identity<double>{}); return;
    default: EMBER_FAIL(op, ": the CUDA kernel takes f32 or f64 tensors");
  }
}

// kernel<<<enough blocks for `total` elements>>>(args...) on `stream`, then the launch check.
template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), int64_t total, void* stream, const char* name, Args&&... args) {
  if (total <= 0) return;
  kernel<<<blocks_for(total), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(std::forward<Args>(args)...);
  EMBER_CUDA_LAUNCHED(name);
}

}  // namespace ember::kernels::cuda::conv_detail
