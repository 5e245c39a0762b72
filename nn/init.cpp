#include "ember/nn/init.h"

#include <cmath>

#include "ember/engine/autograd/grad_mode.h"

namespace ember::nn::init {

std::pair<int64_t, int64_t> fans(const Tensor& w) {
  EMBER_CHECK(w.dim() >= 2, "init: fan in/out needs a weight of >= 2 dims, got ", shape_str(w.sizes()));
  int64_t receptive = 1;
  for (int64_t d = 2; d < w.dim(); ++d) receptive *= w.size(d);
  return {w.size(1) * receptive, w.size(0) * receptive};
}

void uniform_(Tensor& t, double low, double high, Generator* gen) {
  NoGrad ng;
  t.copy_(uniform(t.sizes(), low, high, {.dtype = t.dtype()}, gen));
}
void normal_(Tensor& t, double mean, double std, Generator* gen) {
  NoGrad ng;
  t.copy_(normal(t.sizes(), mean, std, {.dtype = t.dtype()}, gen));
}
void constant_(Tensor& t, double v) {
  NoGrad ng;
  t.fill_(v);
}
void zeros_(Tensor& t) { constant_(t, 0); }
void ones_(Tensor& t) { constant_(t, 1); }

void xavier_uniform_(Tensor& t, double gain, Generator* gen) {
  auto [fi, fo] = fans(t);
  double a = gain * std::sqrt(6.0 / static_cast<double>(fi + fo));
  uniform_(t, -a, a, gen);
}
void xavier_normal_(Tensor& t, double gain, Generator* gen) {
  auto [fi, fo] = fans(t);
  normal_(t, 0, gain * std::sqrt(2.0 / static_cast<double>(fi + fo)), gen);
}
void kaiming_uniform_(Tensor& t, double a, Generator* gen) {
  double gain = std::sqrt(2.0 / (1 + a * a));
  double bound = gain * std::sqrt(3.0 / static_cast<double>(fans(t).first));
  uniform_(t, -bound, bound, gen);
}
void kaiming_normal_(Tensor& t, double a, Generator* gen) {
  double gain = std::sqrt(2.0 / (1 + a * a));
  normal_(t, 0, gain / std::sqrt(static_cast<double>(fans(t).first)), gen);
}
void default_weight_(Tensor& w, Generator* gen) { kaiming_uniform_(w, std::sqrt(5.0), gen); }
void default_bias_(Tensor& b, int64_t fan_in, Generator* gen) {
  double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
  uniform_(b, -bound, bound, gen);
}

}  // namespace ember::nn::init
