// The MLPs of the DDE paper's public code, with PyTorch-compatible parameter names.
#pragma once
#include "ember/nn/linear.h"
#include "ember/nn/module.h"

namespace ember::models {

// Linear, (Softplus, Linear) x (layers - 2), Linear; with `residual`, the input is added to
// the output (the toy generator). Names: net.0.weight, net.2.weight, ...
class MLP : public nn::Module {
 public:
  MLP(int64_t in, int64_t hidden, int64_t layers, int64_t out, bool residual = false);
  Tensor forward(const Tensor& x) override;

 private:
  std::shared_ptr<nn::Sequential> net_;
  bool residual_;
};

// Residual MLP: h = Linear(in, hidden)(x); then (layers - 2) blocks h = h + Linear(softplus(h));
// y = Linear(hidden, out)(softplus(h)) (+ x with `residual_output`). The skip connections
// keep the input gradient of a 25-layer network from vanishing at initialisation, which a
// DDE needs: its loss is on that gradient. Names: in.weight, blocks.<i>.weight, out.weight.
class ResidualMLP : public nn::Module {
 public:
  ResidualMLP(int64_t in, int64_t hidden, int64_t layers, int64_t out, bool residual_output = false);
  Tensor forward(const Tensor& x) override;

 private:
  std::shared_ptr<nn::Linear> in_, out_;
  std::shared_ptr<nn::ModuleList> blocks_;
  bool residual_output_;
};

// DenseNet MLP: each layer's softplus output is concatenated in front of its input, so layer i
// sees in + i * growth features; then one linear output layer (sigmoid with end_sigmoid, for a
// generator of images in [0, 1]). Names: ls.<i>.weight, out.weight.
class DenseNetMLP : public nn::Module {
 public:
  DenseNetMLP(int64_t in, int64_t growth, int64_t layers, int64_t out, bool end_sigmoid = false);
  Tensor forward(const Tensor& x) override;

 private:
  std::shared_ptr<nn::ModuleList> ls_;
  std::shared_ptr<nn::Linear> out_;
  bool end_sigmoid_;
};

}  // namespace ember::models
