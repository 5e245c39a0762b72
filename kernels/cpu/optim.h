// Adam's update of one contiguous parameter on the CPU, the loop nn::Adam and nn::AdamW run per
// parameter. Written here with restrict pointers and compiled per ISA level (EMBER_ISA_CLONES,
// loops.h) so it runs 8 or 16 lanes wide: as a loop inside the optimizer, over four pointers
// the compiler could not prove apart, it ran one element at a time, and a DDE step's three Adam
// steps were a fifth of its host time at batch 1. Each element's arithmetic is the scalar
// formula's, in the same order, with the same constants as the fused CUDA kernel
// (kernels/cuda/optim.cu); where the host has FMA the compiler may fuse a multiply and an add,
// so results can differ in the last bit between ISAs (as for the elementwise loops), never
// between runs on one machine.
#pragma once
#include <cmath>
#include <cstdint>

#include "ember/kernels/cpu/loops.h"

namespace ember::kernels::cpu {

template <typename T>
struct AdamConstants {
  T beta1, beta2, eps, weight_decay;
  T step_size;     // lr / (1 - beta1^t)
  T inv_sqrt_bc2;  // 1 / sqrt(1 - beta2^t)
  T decay;         // 1 - lr * weight_decay (AdamW)
  bool decoupled;  // AdamW: decay the parameter instead of adding weight_decay * p to the gradient
};

// p, m (first moment) and v (second moment) updated in place from the gradient g.
template <typename T>
EMBER_ISA_CLONES void adam_update(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v, int64_t n,
                                  const AdamConstants<T>& c) {
  const T b1 = c.beta1, b2 = c.beta2, eps = c.eps, wd = c.weight_decay;
  const T step_size = c.step_size, inv_sqrt_bc2 = c.inv_sqrt_bc2, decay = c.decay;
  if (c.decoupled) {
    for (int64_t k = 0; k < n; ++k) {
      const T d = g[k];
      const T pk = p[k] * decay;
      m[k] = b1 * m[k] + (T(1) - b1) * d;
      v[k] = b2 * v[k] + (T(1) - b2) * d * d;
      p[k] = pk - step_size * m[k] / (std::sqrt(v[k]) * inv_sqrt_bc2 + eps);
    }
    return;
  }
  for (int64_t k = 0; k < n; ++k) {
    const T d = g[k] + wd * p[k];
    m[k] = b1 * m[k] + (T(1) - b1) * d;
    v[k] = b2 * v[k] + (T(1) - b2) * d * d;
    p[k] = p[k] - step_size * m[k] / (std::sqrt(v[k]) * inv_sqrt_bc2 + eps);
  }
}

}  // namespace ember::kernels::cpu
