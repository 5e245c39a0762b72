#include "ember/nn/flow.h"

#include <cmath>

#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/factory.h"
#include "ember/engine/random.h"
#include "ember/ops/conv.h"
#include "ember/ops/elementwise.h"
#include "ember/ops/linalg.h"
#include "ember/ops/reduce.h"
#include "ember/ops/shape.h"

namespace ember::nn {

namespace {
void check_nchw(const char* layer, const Tensor& x, int64_t c) {
  EMBER_CHECK(x.dim() == 4 && x.size(1) == c, layer, ": expected [N, ", c, ", H, W], got ", shape_str(x.sizes()));
}
}  // namespace

ActNorm::ActNorm(int64_t c) {
  EMBER_CHECK(c > 0, "ActNorm: channels must be > 0");
  register_parameter("loc", loc, zeros({1, c, 1, 1}));
  register_parameter("log_scale", log_scale, zeros({1, c, 1, 1}));
  register_buffer("initialized", initialized, zeros({}, {.dtype = DType::u8}));
}

std::pair<Tensor, Tensor> ActNorm::forward_logdet(const Tensor& x) {
  check_nchw("ActNorm", x, loc.size(1));
  if (is_training() && initialized.item() == 0) {
    NoGrad ng;
    Tensor m = mean(x, {0, 2, 3}, true);
    Tensor sd = sqrt(mean(square(sub(x, m)), {0, 2, 3}, true));
    loc.copy_(neg(m));
    log_scale.copy_(neg(log(add(sd, 1e-6))));
    initialized.fill_(1);
  }
  Tensor y = mul(add(x, loc), exp(log_scale));
  Tensor ld = mul(sum(log_scale), static_cast<double>(x.size(2) * x.size(3)));
  return {y, ld.expand({x.size(0)})};
}

Tensor ActNorm::inverse(const Tensor& y) {
  check_nchw("ActNorm.inverse", y, loc.size(1));
  return sub(mul(y, exp(neg(log_scale))), loc);
}

Invertible1x1Conv::Invertible1x1Conv(int64_t c, Generator* gen) {
  EMBER_CHECK(c > 0, "Invertible1x1Conv: channels must be > 0");
  // A random rotation: Gram-Schmidt on a Gaussian matrix, in f64.
  std::vector<double> a = randn({c, c}, {.dtype = DType::f64}, gen).to_vector<double>();
  for (int64_t i = 0; i < c; ++i) {
    for (int64_t j = 0; j < i; ++j) {
      double d = 0;
      for (int64_t k = 0; k < c; ++k) d += a[i * c + k] * a[j * c + k];
      for (int64_t k = 0; k < c; ++k) a[i * c + k] -= d * a[j * c + k];
    }
    double n = 0;
    for (int64_t k = 0; k < c; ++k) n += a[i * c + k] * a[i * c + k];
    for (int64_t k = 0; k < c; ++k) a[i * c + k] /= std::sqrt(n);
  }
  auto [P, L, U] = lu(from_vector(a, {c, c}));
  Tensor s = U.detach().to(DType::f64);
  std::vector<double> sv = s.to_vector<double>(), sign(c), logs(c);
  for (int64_t i = 0; i < c; ++i) {
    sign[i] = sv[i * c + i] < 0 ? -1.0 : 1.0;
    logs[i] = std::log(std::abs(sv[i * c + i]));
  }
  register_buffer("p", p, P.to(DType::f32));
  register_buffer("sign_s", sign_s, from_vector(sign, {c}, {.dtype = DType::f32}));
  register_parameter("lower", lower, tril(L, -1).to(DType::f32));
  register_parameter("upper", upper, triu(U, 1).to(DType::f32));
  register_parameter("log_s", log_s, from_vector(logs, {c}, {.dtype = DType::f32}));
}

Tensor Invertible1x1Conv::weight() const {
  const int64_t c = log_s.size(0);
  Tensor I = eye(c, {.dtype = lower.dtype()});
  // masks keep L strictly lower and U strictly upper even as the optimizer moves them
  Tensor l = add(tril(lower, -1), I);
  Tensor u = add(triu(upper, 1), mul(I, mul(sign_s, exp(log_s)).unsqueeze(0)));
  return matmul(p, matmul(l, u));
}

std::pair<Tensor, Tensor> Invertible1x1Conv::forward_logdet(const Tensor& x) {
  const int64_t c = log_s.size(0);
  check_nchw("Invertible1x1Conv", x, c);
  Tensor y = conv2d(x, weight().reshape({c, c, 1, 1}));
  Tensor ld = mul(sum(log_s), static_cast<double>(x.size(2) * x.size(3)));
  return {y, ld.expand({x.size(0)})};
}

Tensor Invertible1x1Conv::inverse(const Tensor& y) {
  const int64_t c = log_s.size(0);
  check_nchw("Invertible1x1Conv.inverse", y, c);
  return conv2d(y, ember::inverse(weight()).reshape({c, c, 1, 1}));
}

}  // namespace ember::nn
