// Small stateless-or-nearly layers: Dropout, nearest Upsample, AvgPool2d, Identity, Flatten.
#pragma once
#include "ember/engine/random.h"
#include "ember/nn/module.h"

namespace ember::nn {

// Inverted dropout in training (kept elements scaled by 1 / (1 - p)), identity in eval.
// p in [0, 1). Draws from `gen` (the default generator if null).
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) override;
  double p;
  Generator* gen;
};

// Nearest-neighbour upsampling by an integer scale, [N, C, H, W] -> [N, C, H*s, W*s]
// (nn.Upsample(scale_factor=s, mode="nearest")).
class Upsample : public Module {
 public:
  explicit Upsample(int64_t scale_factor);
  Tensor forward(const Tensor& x) override;
  int64_t scale_factor;
};

// Mean over kernel x kernel windows; stride 0 means stride = kernel (PyTorch's default).
class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(int64_t kernel, int64_t stride = 0);
  Tensor forward(const Tensor& x) override;
  int64_t kernel, stride;
};

class Identity : public Module {  // keeps a slot in a ModuleList where PyTorch has nn.Identity
 public:
  Tensor forward(const Tensor& x) override { return x; }
};

class Flatten : public Module {  // [N, ...] -> [N, prod(...)]
 public:
  Tensor forward(const Tensor& x) override;
};

}  // namespace ember::nn
