// Normalization layers as functions: layer_norm, group_norm, batch_norm, and dropout.
//
// The forwards are fused CPU kernels (one pass for the statistics of each row / group /
// channel, accumulated in f64 for f32 inputs, then one affine pass y = x * scale + shift).
// On the GPU the forwards are the same normalization written in ops (reductions and
// broadcast elementwise kernels).
// Their backwards are written with ordinary differentiable ops (they recompute
// xhat = (x - mean) * rstd from x), so second and higher derivatives work.
#pragma once
#include "ember/engine/random.h"
#include "ember/engine/tensor.h"

namespace ember {

// Normalizes over the trailing dims `normalized_shape` of x (which must match x's last dims):
// y = (x - mean) / sqrt(var + eps) * weight + bias, with the biased variance. weight and bias
// are optional and, when given, have shape normalized_shape.
Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), double eps = 1e-5);

// x: [N, C, ...]. The C channels are split into num_groups groups of C / num_groups channels;
// each (sample, group) is normalized over its channels and spatial positions. weight and bias
// (optional) are per channel, [C].
Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight = Tensor(), const Tensor& bias = Tensor(),
                  double eps = 1e-5);

// silu(group_norm(x + sample_bias, num_groups, weight, bias)): the U-Net's GroupNorm with its
// neighbours, sample_bias [N, C] (the time embedding, broadcast over the spatial dims; optional)
// added before the statistics and SiLU (when `silu`) after. One recorded op: on the GPU one
// fused kernel each way (kernels/cuda/group_norm.cu); on the CPU the forward is add, group_norm
// and silu; the backward is written in ops on the CPU and under create_graph on the GPU.
Tensor group_norm_silu(const Tensor& x, int64_t num_groups, const Tensor& weight = Tensor(), const Tensor& bias = Tensor(),
                       const Tensor& sample_bias = Tensor(), double eps = 1e-5, bool silu = true);

// x: [N, C] or [N, C, H, W] (any [N, C, ...]). Per-channel statistics over the batch and the
// spatial dims.
// - training: normalizes with the batch mean and biased variance; when running_mean /
//   running_var are given, updates them in place (without autograd) as
//   running = (1 - momentum) * running + momentum * batch, with the unbiased batch variance.
// - eval: normalizes with running_mean and running_var, which must then be given.
// weight and bias (optional) are [C]; running stats (optional in training) are [C].
Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                  const Tensor& bias, bool training, double momentum = 0.1, double eps = 1e-5);

// Inverted dropout: in training, zeroes each element with probability p (a Philox draw from
// `gen`, or the default generator) and scales the kept ones by 1 / (1 - p). The identity in
// eval or when p == 0. p must lie in [0, 1).
Tensor dropout(const Tensor& x, double p, bool training, Generator* gen = nullptr);

}  // namespace ember
