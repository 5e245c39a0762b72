// Normalisation layers over ops/norm.h, with PyTorch's parameter and buffer names
// (weight, bias, running_mean, running_var, num_batches_tracked) and initialisation
// (weight 1, bias 0).
#pragma once
#include "ember/nn/module.h"

namespace ember::nn {

// Per (sample, group of num_channels / num_groups channels) statistics; weight, bias [C].
class GroupNorm : public Module {
 public:
  GroupNorm(int64_t num_groups, int64_t num_channels, double eps = 1e-5, bool affine = true);
  Tensor forward(const Tensor& x) override;  // [N, C, ...]
  // silu(forward(x + sample_bias)), sample_bias [N, C] optional: ops/norm.h's group_norm_silu,
  // one fused kernel on the GPU (the U-Net's norm, time embedding and activation).
  Tensor forward_silu(const Tensor& x, const Tensor& sample_bias = Tensor());
  Tensor weight, bias;
  int64_t num_groups, num_channels;
  double eps;
};

// Batch statistics in training (running statistics updated with `momentum` from the unbiased
// batch variance, num_batches_tracked counted), running statistics in eval. Takes any
// [N, C, ...]; BatchNorm1d takes [N, C] or [N, C, L] only and BatchNorm2d [N, C, H, W] only.
class BatchNorm : public Module {
 public:
  BatchNorm(int64_t num_features, double eps = 1e-5, double momentum = 0.1, bool affine = true);
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;  // the counter is i64 []
  int64_t num_features;
  double eps, momentum;

 protected:
  Tensor run(const char* layer, const Tensor& x);
};

class BatchNorm1d : public BatchNorm {
 public:
  using BatchNorm::BatchNorm;
  Tensor forward(const Tensor& x) override;
};

class BatchNorm2d : public BatchNorm {
 public:
  using BatchNorm::BatchNorm;
  Tensor forward(const Tensor& x) override;
};

// Statistics over the trailing dims normalized_shape; weight, bias of that shape.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(Shape normalized_shape, double eps = 1e-5, bool affine = true);
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias;
  Shape normalized_shape;
  double eps;
};

}  // namespace ember::nn
