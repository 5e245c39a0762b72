// Weight re-parameterisations of a Linear or Conv2d, as PyTorch's weight_norm and
// spectral_norm: the wrapped layer's `weight` parameter is replaced.
#pragma once
#include <functional>

#include "ember/engine/random.h"
#include "ember/nn/conv.h"
#include "ember/nn/linear.h"

namespace ember::nn {

// weight = g * v / ||v||, the norm per output channel (over every dim but 0). Parameters
// weight_g [out, 1, ...] and weight_v (Salimans & Kingma, 2016).
class WeightNorm : public Module {
 public:
  explicit WeightNorm(std::shared_ptr<Linear> layer);
  explicit WeightNorm(std::shared_ptr<Conv2d> layer);
  Tensor forward(const Tensor& x) override;
  Tensor weight() const;
  Tensor weight_g, weight_v;

 private:
  void wrap(Module& inner);
  std::shared_ptr<Module> inner_;
  std::function<Tensor(const Tensor& x, const Tensor& w)> apply_;
};

// weight = W / sigma(W), sigma the largest singular value of W viewed as [out, rest], by one
// power iteration per training forward on buffers u, v (Miyato et al., 2018).
class SpectralNorm : public Module {
 public:
  explicit SpectralNorm(std::shared_ptr<Linear> layer, Generator* gen = nullptr);
  explicit SpectralNorm(std::shared_ptr<Conv2d> layer, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) override;
  Tensor weight();  // W / sigma, advancing the power iteration in training
  Tensor weight_orig, u, v;

 private:
  void wrap(Module& inner, Generator* gen);
  std::shared_ptr<Module> inner_;
  std::function<Tensor(const Tensor& x, const Tensor& w)> apply_;
};

}  // namespace ember::nn
