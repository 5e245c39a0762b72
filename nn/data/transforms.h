// Per-batch transforms for image data: from stored u8 pixels to the floats a model trains
// on, dequantization, RealNVP's logit preprocessing, padding and flips. Each takes a batch
// [B, ...] and returns a new tensor (the input is never modified). They are written with
// ordinary ops, so they run on the batch's device. Random ones draw only from the Generator
// they are given (a DataLoader hands its transform one derived from (seed, epoch, batch)), so
// a run is reproducible and resumable.
#pragma once
#include "ember/engine/random.h"
#include "ember/engine/tensor.h"

namespace ember::data {

// u8 pixels p in 0..255 -> p / 255 in [0, 1].
Tensor to_float_unit(const Tensor& x, DType dtype = DType::f32);

// u8 pixels p in 0..255 -> p / 127.5 - 1 in [-1, 1].
Tensor to_float_symmetric(const Tensor& x, DType dtype = DType::f32);

// Uniform dequantization of u8 pixels: (p + u) / 256 with u ~ U[0, 1) drawn independently for
// every element (one rand() of x's shape from gen), so the result lies in [0, 1) and a
// continuous density on it gives a lower bound on the discrete model's log-likelihood
// (Theis et al. 2016).
Tensor uniform_dequantize(const Tensor& x, Generator& gen, DType dtype = DType::f32);

// RealNVP's logit preprocessing (Dinh et al. 2017, section 4.1) of a float batch x in [0, 1]
// ([0, 1) after uniform_dequantize):
//   s = alpha + (1 - 2 alpha) x,        y = logit(s) = log s - log(1 - s),
// and the log-determinant of the Jacobian of x -> y for each sample b, summed over its dims:
//   logdet_b = sum_i [ log(1 - 2 alpha) - log s_bi - log(1 - s_bi) ],
// since dy/dx = (1 - 2 alpha) / (s (1 - s)) elementwise. The density of x is then
// log p(x) = log p(y) + logdet. alpha = 0.05 keeps y finite at x = 0 and x = 1; with
// alpha = 0, x must lie strictly inside (0, 1). Values outside the domain are an error.
// Differentiable in x.
struct LogitTransformed {
  Tensor y;       // the shape of x
  Tensor logdet;  // [B], the dtype of x
};
LogitTransformed logit_transform(const Tensor& x, double alpha = 0.05);
// The inverse map y -> x = (sigmoid(y) - alpha) / (1 - 2 alpha), to turn samples back into
// images.
Tensor logit_inverse(const Tensor& y, double alpha = 0.05);

// Zero-pads the last two dims (H, W) of a batch to 32 x 32, (32 - H) / 2 rows above and the
// rest below (likewise left and right): a 28x28 batch [B, C, 28, 28] gets 2 on every side,
// [B, C, 32, 32]. Any dtype; H and W must be at most 32.
Tensor pad_to_32(const Tensor& x);

// Flips each sample of a batch [B, ..., W] left to right (along the last dim) with
// probability p: draws u = rand({B}) (f32) from gen, one value per sample even when p is 0
// or 1, and flips sample b exactly when u[b] < p. Any dtype; at least 2 dims.
Tensor random_hflip(const Tensor& x, Generator& gen, double p = 0.5);

}  // namespace ember::data
