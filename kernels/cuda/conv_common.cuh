// What conv.cu and pool.cu share (beyond map.cuh's grid-stride indexing and f32/f64 dispatch):
// a product rounded on its own, and a launch that checks itself. Every kernel of the two files is one thread per element of the
// tensor it writes, so each needs only a flat element count to size its grid.
#pragma once
#include <type_traits>

#include "ember/engine/error.h"
#include "ember/kernels/cuda/map.cuh"

namespace ember::kernels::cuda::conv_detail {

// a * b rounded once, never fused into a following add: the CPU computes the product first
// (ops/conv.cpp's pooling backwards), and fusing would change the last bit.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

// kernel<<<enough blocks for `total` elements>>>(args...) on `stream`, then the launch check.
template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), int64_t total, void* stream, const char* name, Args&&... args) {
  if (total <= 0) return;
  kernel<<<blocks_for(total), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(std::forward<Args>(args)...);
  EMBER_CUDA_LAUNCHED(name);
}

}  // namespace ember::kernels::cuda::conv_detail
