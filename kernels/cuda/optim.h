// Fused multi-tensor optimizer steps: one launch updates up to kMaxTensorsPerLaunch parameters
// (their gradients and moment buffers), instead of a chain of elementwise launches per tensor.
#pragma once
#include <cstdint>

#include "ember/kernels/cuda/elementwise.h"

namespace ember::kernels::cuda {

constexpr int kMaxTensorsPerLaunch = 32;

struct AdamTensor {
  void* param;
  const void* grad;  // same dtype and layout (contiguous) as param
  void* exp_avg;
  void* exp_avg_sq;
  int64_t numel;
};

struct AdamStep {
  double beta1, beta2, eps, weight_decay;
  double step_size;     // lr / (1 - beta1^t)
  double inv_sqrt_bc2;  // 1 / sqrt(1 - beta2^t)
  double decay;         // 1 - lr weight_decay (decoupled only)
  bool decoupled;       // AdamW
};

// The CPU's Adam update (nn/optim.cpp), elementwise over every listed tensor; f32 or f64.
void adam_step(ElemType t, const AdamTensor* tensors, int count, const AdamStep& s, void* stream);

}  // namespace ember::kernels::cuda
