// Normalisation layers over ops/norm.h, with PyTorch's parameter and buffer names
// (weight, bias, running_mean, running_var, num_batches_tracked).
#pragma once
#include "ember/nn/module.h"

namespace ember::nn {

class GroupNorm : public Module {
 public:
  GroupNorm(int64_t num_groups, int64_t num_channels, double eps = 1e-5, bool affine = true);
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias;
  int64_t num_groups;
  double eps;
};

// Batch statistics in training (running statistics updated with `momentum`, unbiased
// variance), running statistics in eval. BatchNorm1d takes [N, C] or [N, C, L]; 2d [N, C, H, W].
class BatchNorm : public Module {
 public:
  BatchNorm(int64_t num_features, double eps = 1e-5, double momentum = 0.1, bool affine = true);
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  double eps, momentum;
};
using BatchNorm1d = BatchNorm;
using BatchNorm2d = BatchNorm;

class LayerNorm : public Module {
 public:
  explicit LayerNorm(Shape normalized_shape, double eps = 1e-5, bool affine = true);
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias;
  Shape normalized_shape;
  double eps;
};

}  // namespace ember::nn
