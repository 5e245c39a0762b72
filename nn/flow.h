// Glow's invertible layers (Kingma & Dhariwal, 2018). Each returns its output together with
// the log-determinant of its Jacobian per sample, and has an exact inverse.
#pragma once
#include <utility>

#include "ember/engine/random.h"
#include "ember/nn/module.h"

namespace ember::nn {

// y = (x + loc) * exp(log_scale), per channel. The first forward in training initialises loc
// and log_scale from the batch so y has zero mean and unit variance per channel (Glow sec. 3.1).
// log|det J| = H * W * sum(log_scale).
class ActNorm : public Module {
 public:
  explicit ActNorm(int64_t channels);
  std::pair<Tensor, Tensor> forward_logdet(const Tensor& x);  // x [N, C, H, W] -> (y, logdet [N])
  Tensor forward(const Tensor& x) override { return forward_logdet(x).first; }
  Tensor inverse(const Tensor& y);
  Tensor loc, log_scale, initialized;
};

// A 1x1 convolution with weight W = P L (U + diag(sign_s * exp(log_s))) (Glow sec. 3.2, LU
// parameterisation): P a fixed permutation, L unit lower triangular, U strictly upper, s fixed
// in sign. W starts as a random rotation. log|det J| = H * W * sum(log_s).
class Invertible1x1Conv : public Module {
 public:
  explicit Invertible1x1Conv(int64_t channels, Generator* gen = nullptr);
  std::pair<Tensor, Tensor> forward_logdet(const Tensor& x);
  Tensor forward(const Tensor& x) override { return forward_logdet(x).first; }
  Tensor inverse(const Tensor& y);
  Tensor weight() const;  // [C, C]
  Tensor p, sign_s, lower, upper, log_s;
};

}  // namespace ember::nn
