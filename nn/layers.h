// Small stateless-or-nearly layers: Dropout, nearest Upsample, AvgPool2d, Flatten.
#pragma once
#include "ember/engine/random.h"
#include "ember/nn/module.h"

namespace ember::nn {

// Inverted dropout in training, identity in eval. Draws from `gen` (default generator if null).
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5, Generator* gen = nullptr) : p(p), gen(gen) {}
  Tensor forward(const Tensor& x) override;
  double p;
  Generator* gen;
};

class Upsample : public Module {  // nearest neighbour, integer scale
 public:
  explicit Upsample(int64_t scale_factor) : scale_factor(scale_factor) {}
  Tensor forward(const Tensor& x) override;
  int64_t scale_factor;
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(int64_t kernel, int64_t stride = 0) : kernel(kernel), stride(stride == 0 ? kernel : stride) {}
  Tensor forward(const Tensor& x) override;
  int64_t kernel, stride;
};

class Identity : public Module {  // keeps a slot in a ModuleList where PyTorch has nn.Identity
 public:
  Tensor forward(const Tensor& x) override { return x; }
};

class Flatten : public Module {  // [N, ...] -> [N, prod(...)]
 public:
  Tensor forward(const Tensor& x) override { return x.flatten(1); }
};

}  // namespace ember::nn
