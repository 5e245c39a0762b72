#include "ember/nn/wrappers.h"

#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/factory.h"
#include "ember/engine/random.h"
#include "ember/ops/elementwise.h"
#include "ember/ops/linalg.h"
#include "ember/ops/reduce.h"

namespace ember::nn {

namespace {
Shape all_but_first(const Tensor& w) {
  Shape d;
  for (int64_t i = 1; i < w.dim(); ++i) d.push_back(i);
  return d;
}
std::function<Tensor(const Tensor&, const Tensor&)> linear_apply(std::shared_ptr<Linear> l) {
  return [l](const Tensor& x, const Tensor& w) { return linear(x, w, l->bias); };
}
std::function<Tensor(const Tensor&, const Tensor&)> conv_apply(std::shared_ptr<Conv2d> c) {
  return [c](const Tensor& x, const Tensor& w) { return conv2d(x, w, c->bias, c->stride, c->padding, c->dilation, c->groups); };
}
Tensor normalize(const Tensor& t) { return div(t, add(norm(t), 1e-12)); }
}  // namespace

void WeightNorm::wrap(Module& inner) {
  Tensor v = inner.take_parameter("weight");
  register_parameter("weight_g", weight_g, norm(v.detach(), 2.0, all_but_first(v), /*keepdim=*/true));
  register_parameter("weight_v", weight_v, v.detach().clone());
}

WeightNorm::WeightNorm(std::shared_ptr<Linear> layer) : inner_(layer), apply_(linear_apply(layer)) {
  register_module("module", layer);
  wrap(*layer);
}
WeightNorm::WeightNorm(std::shared_ptr<Conv2d> layer) : inner_(layer), apply_(conv_apply(layer)) {
  register_module("module", layer);
  wrap(*layer);
}

Tensor WeightNorm::weight() const {
  return mul(weight_g, div(weight_v, norm(weight_v, 2.0, all_but_first(weight_v), /*keepdim=*/true)));
}
Tensor WeightNorm::forward(const Tensor& x) { return apply_(x, weight()); }

void SpectralNorm::wrap(Module& inner, Generator* gen) {
  Tensor orig = inner.take_parameter("weight");
  register_parameter("weight_orig", weight_orig, orig.detach().clone());
  const int64_t rows = orig.size(0), cols = orig.numel() / rows;
  register_buffer("u", u, normalize(randn({rows}, {.dtype = orig.dtype()}, gen)));
  register_buffer("v", v, normalize(randn({cols}, {.dtype = orig.dtype()}, gen)));
}

SpectralNorm::SpectralNorm(std::shared_ptr<Linear> layer, Generator* gen) : inner_(layer), apply_(linear_apply(layer)) {
  register_module("module", layer);
  wrap(*layer, gen);
}
SpectralNorm::SpectralNorm(std::shared_ptr<Conv2d> layer, Generator* gen) : inner_(layer), apply_(conv_apply(layer)) {
  register_module("module", layer);
  wrap(*layer, gen);
}

Tensor SpectralNorm::weight() {
  const int64_t rows = weight_orig.size(0);
  Tensor w2 = weight_orig.reshape({rows, -1});
  if (is_training()) {
    NoGrad ng;  // u, v are estimates, not differentiated through (as PyTorch)
    Tensor wd = w2.detach();
    v.copy_(normalize(matmul(wd.t(), u)));
    u.copy_(normalize(matmul(wd, v)));
  }
  Tensor sigma = dot(u.detach().clone(), matmul(w2, v.detach().clone()));
  return div(weight_orig, sigma);
}

Tensor SpectralNorm::forward(const Tensor& x) { return apply_(x, weight()); }

}  // namespace ember::nn
