// Parameter initialisers (in place, under NoGrad). fan_in/fan_out follow PyTorch: for a weight
// [out, in, k...], fan_in = in * prod(k), fan_out = out * prod(k).
#pragma once
#include "ember/engine/random.h"
#include "ember/engine/tensor.h"

namespace ember::nn::init {

std::pair<int64_t, int64_t> fans(const Tensor& w);
void uniform_(Tensor& t, double low, double high, Generator* gen = nullptr);
void normal_(Tensor& t, double mean, double std, Generator* gen = nullptr);
void zeros_(Tensor& t);
void ones_(Tensor& t);
void constant_(Tensor& t, double v);
void xavier_uniform_(Tensor& t, double gain = 1.0, Generator* gen = nullptr);
void xavier_normal_(Tensor& t, double gain = 1.0, Generator* gen = nullptr);
// gain = sqrt(2 / (1 + a^2)) (leaky ReLU slope a); mode fan_in.
void kaiming_uniform_(Tensor& t, double a = 0.0, Generator* gen = nullptr);
void kaiming_normal_(Tensor& t, double a = 0.0, Generator* gen = nullptr);
// PyTorch's default for Linear/Conv weights (kaiming_uniform_ with a = sqrt(5), which is
// U(-1/sqrt(fan_in), 1/sqrt(fan_in))) and for their biases (the same bound).
void default_weight_(Tensor& w, Generator* gen = nullptr);
void default_bias_(Tensor& b, int64_t fan_in, Generator* gen = nullptr);

}  // namespace ember::nn::init
