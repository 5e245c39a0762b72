// EMBER_HD marks a function compiled for both sides: by the C++ compiler for the CPU kernels and
// by nvcc as __host__ __device__ for the GPU ones, so that one routine is both devices' twin.
#pragma once

#if defined(__CUDACC__)
#define EMBER_HD __host__ __device__ __forceinline__
#else
#define EMBER_HD inline
#endif
