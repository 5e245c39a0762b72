// Fused multi-tensor optimizer steps: one launch updates up to kMaxTensorsPerLaunch parameters
// (their gradients and state buffers), instead of a chain of elementwise launches per tensor.
#pragma once
#include <cstdint>

#include "ember/kernels/cuda/elementwise.h"

namespace ember::kernels::cuda {

constexpr int kMaxTensorsPerLaunch = 32;

// One parameter's memory: every pointer contiguous, of the parameter's dtype and numel.
struct OptimTensor {
  void* param;
  const void* grad;
  void* state0;  // Adam, Adamax: exp_avg; SGD: the momentum buffer (null without momentum)
  void* state1;  // Adam: exp_avg_sq; Adamax: exp_inf; SGD: unused
  int64_t numel;
};

enum class OptimRule : uint8_t { adam, adamax, sgd };

// The scalars of one step (nn/optim.cpp computes them on the host, so the kernels are the
// CPU's update loops with the constants already folded).
struct OptimStep {
  OptimRule rule = OptimRule::adam;
  double lr = 0;
  double beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0;
  double step_size = 0;     // Adam: lr / (1 - beta1^t); Adamax: the same
  double inv_sqrt_bc2 = 0;  // Adam: 1 / sqrt(1 - beta2^t)
  double decay = 1;         // AdamW: 1 - lr weight_decay
  bool decoupled = false;   // AdamW
  double momentum = 0, dampening = 0;  // SGD
  bool nesterov = false, first = false;  // SGD; first: the momentum buffer starts as the gradient
  // When set (a step captured in a CUDA graph), the kernel reads the scalars that change from
  // step to step from this device array instead: [lr, step_size, inv_sqrt_bc2, decay, first].
  const double* device_scalars = nullptr;
};

// The CPU's update (nn/optim.cpp) elementwise over every listed tensor; f32 or f64.
void optim_step(ElemType t, const OptimTensor* tensors, int count, const OptimStep& s, void* stream);

}  // namespace ember::kernels::cuda
