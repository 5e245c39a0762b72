// DDPM's attention-side layers: the sinusoidal timestep embedding and the 2-D self-attention
// block (names n, qkv, o as in ../shared/reference/torch_workloads.py's Attn).
#pragma once
#include "ember/nn/conv.h"
#include "ember/nn/module.h"
#include "ember/nn/norm.h"

namespace ember::nn {

// DDPM's get_timestep_embedding: [sin(t f_i), cos(t f_i)] with f_i = exp(-log(10000) i /
// (half - 1)), i < half = dim / 2, and a zero column at the end when dim is odd. t: [N] (any
// dtype; integer timesteps are taken as f32) -> [N, dim]. dim >= 4.
Tensor timestep_embedding(const Tensor& t, int64_t dim);

class SinusoidalEmbedding : public Module {
 public:
  explicit SinusoidalEmbedding(int64_t dim) : dim(dim) {}
  Tensor forward(const Tensor& t) override { return timestep_embedding(t, dim); }  // [N] -> [N, dim]
  int64_t dim;
};

// DDPM's AttnBlock: GroupNorm(32), a 1x1 conv to q, k, v (one conv "qkv" to 3C channels, split
// in that order), softmax(q k^T / sqrt(C)) v over the H*W positions, a 1x1 output conv "o",
// and the residual. channels: a multiple of 32. Parameters n.{weight,bias}, qkv.{weight,bias},
// o.{weight,bias}.
class SelfAttention2d : public Module {
 public:
  explicit SelfAttention2d(int64_t channels);
  Tensor forward(const Tensor& x) override;  // [N, C, H, W] -> [N, C, H, W]
  int64_t channels;

 private:
  std::shared_ptr<GroupNorm> n_;
  std::shared_ptr<Conv2d> qkv_, o_;
};

}  // namespace ember::nn
