// Linear layer and the activations as modules.
#pragma once
#include <functional>

#include "ember/nn/module.h"

namespace ember::nn {

// y = x W^T + b, W: [out, in]; PyTorch's default initialisation.
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true, TensorOptions opts = {});
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias;
  int64_t in_features, out_features;
};

// A stateless function as a module: Activation(softplus) etc.
class Activation : public Module {
 public:
  explicit Activation(std::function<Tensor(const Tensor&)> f) : f_(std::move(f)) {}
  Tensor forward(const Tensor& x) override { return f_(x); }

 private:
  std::function<Tensor(const Tensor&)> f_;
};

std::shared_ptr<Module> ReLU();
std::shared_ptr<Module> SiLU();
std::shared_ptr<Module> Sigmoid();
std::shared_ptr<Module> Tanh();
std::shared_ptr<Module> GELU();
std::shared_ptr<Module> Softplus(double beta = 1.0, double threshold = 20.0);
std::shared_ptr<Module> LeakyReLU(double slope = 0.01);
std::shared_ptr<Module> ELU(double alpha = 1.0);

}  // namespace ember::nn
