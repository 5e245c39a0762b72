// EMBER_HD marks a function compiled for both sides: by the C++ compiler for the CPU kernels and
// by nvcc as __host__ __device__ for the GPU ones, so that one routine is both devices' twin.
#pragma once

#if defined(__CUDACC__)
#define EMBER_HD __host__ __device__ __forceinline__
#else
#define EMBER_HD inline
#endif

namespace ember::kernels {

// a * b rounded on its own. nvcc contracts a * b + c into one fused multiply-add (one rounding)
// where the CPU build rounds twice; code whose two devices must agree to the last bit (Philox
// draws, prod's derivative rows) writes its products through these.
EMBER_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
EMBER_HD double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

}  // namespace ember::kernels
