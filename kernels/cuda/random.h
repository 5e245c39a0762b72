// Random fills on the GPU from the same Philox stream as the CPU (engine/random.cpp has the
// layout): counter base + c feeds elements [c k, c k + k) with k = 4 for f32 and 2 for f64.
#pragma once
#include <cstdint>

#include "ember/kernels/cuda/elementwise.h"

namespace ember::kernels::cuda {

// out[i] = low + (high - low) u_i, contiguous, f32 or f64.
void philox_uniform(ElemType t, void* out, int64_t n, double low, double high, uint64_t seed, uint64_t base,
                    void* stream);
// out[i] = mean + std z_i, Box-Muller on the same uniforms as the CPU.
void philox_normal(ElemType t, void* out, int64_t n, double mean, double std, uint64_t seed, uint64_t base,
                   void* stream);
// out[i] = low + r_i mod (high - low) in i64, r_i 64 bits: two values per counter, as the CPU.
void philox_randint(int64_t* out, int64_t n, int64_t low, int64_t high, uint64_t seed, uint64_t base, void* stream);

}  // namespace ember::kernels::cuda
