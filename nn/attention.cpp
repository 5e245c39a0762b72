#include "ember/nn/attention.h"

#include <cmath>

#include "ember/engine/factory.h"
#include "ember/ops/attention.h"
#include "ember/ops/elementwise.h"
#include "ember/ops/shape.h"

namespace ember::nn {

Tensor timestep_embedding(const Tensor& t, int64_t dim) {
  EMBER_CHECK(t.defined() && t.dim() == 1 && dim >= 4, "timestep_embedding: t must be [N] and dim >= 4, got t ",
              t.defined() ? shape_str(t.sizes()) : std::string("undefined"), " and dim ", dim);
  const int64_t half = dim / 2;
  DType dt = t.is_floating_point() ? t.dtype() : DType::f32;
  Tensor i = arange(static_cast<double>(half), {.dtype = dt, .device = t.device()});
  Tensor f = exp(mul(i, -std::log(10000.0) / static_cast<double>(half - 1)));
  Tensor e = mul(t.to(dt).unsqueeze(1), f.unsqueeze(0));
  Tensor out = cat({sin(e), cos(e)}, 1);
  if (dim % 2 == 1) out = cat({out, zeros({t.size(0), 1}, {.dtype = dt, .device = t.device()})}, 1);
  return out;
}

SelfAttention2d::SelfAttention2d(int64_t c) : channels(c) {
  EMBER_CHECK(c > 0 && c % 32 == 0, "SelfAttention2d: channels must be a positive multiple of 32 (GroupNorm(32)), got ",
              c);
  n_ = register_module("n", std::make_shared<GroupNorm>(32, c));
  qkv_ = register_module("qkv", std::make_shared<Conv2d>(c, 3 * c, 1));
  o_ = register_module("o", std::make_shared<Conv2d>(c, c, 1));
}

Tensor SelfAttention2d::forward(const Tensor& x) {
  EMBER_CHECK(x.defined() && x.dim() == 4 && x.size(1) == channels, "SelfAttention2d(", channels,
              "): expected an input [N, ", channels, ", H, W], got ",
              x.defined() ? shape_str(x.sizes()) : std::string("an undefined tensor"));
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor qkv = (*qkv_)((*n_)(x)).reshape({B, 3, C, H * W}).permute({1, 0, 3, 2});  // [3, B, HW, C]
  Tensor h = scaled_dot_product_attention(qkv.select(0, 0), qkv.select(0, 1), qkv.select(0, 2));
  return add(x, (*o_)(h.permute({0, 2, 1}).reshape({B, C, H, W})));
}

}  // namespace ember::nn
