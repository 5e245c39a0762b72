// DDPM's attention-side layers: the sinusoidal timestep embedding and the 2-D self-attention
// block (names n, qkv, o as in ../shared/reference/torch_workloads.py's Attn).
#pragma once
#include "ember/nn/conv.h"
#include "ember/nn/module.h"
#include "ember/nn/norm.h"

namespace ember::nn {

// [sin(t f_i), cos(t f_i)] with f_i = exp(-log(10000) i / (half - 1)), i < half = dim / 2.
Tensor timestep_embedding(const Tensor& t, int64_t dim);

class SinusoidalEmbedding : public Module {
 public:
  explicit SinusoidalEmbedding(int64_t dim) : dim(dim) {}
  Tensor forward(const Tensor& t) override { return timestep_embedding(t, dim); }  // [N] -> [N, dim]
  int64_t dim;
};

// GroupNorm(32), a 1x1 conv to q, k, v, softmax(q k^T / sqrt(C)) v over the H*W positions,
// a 1x1 output conv, and the residual.
class SelfAttention2d : public Module {
 public:
  explicit SelfAttention2d(int64_t channels);
  Tensor forward(const Tensor& x) override;

 private:
  std::shared_ptr<GroupNorm> n_;
  std::shared_ptr<Conv2d> qkv_, o_;
};

}  // namespace ember::nn
