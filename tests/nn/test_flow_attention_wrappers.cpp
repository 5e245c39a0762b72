// Flow layers (ActNorm, invertible 1x1 conv), the attention-side layers and the weight
// wrappers: inverses, log-determinants against the Jacobian, initialisation, derivatives to
// second order.
#include <gtest/gtest.h>

#include <cmath>

#include "ember/ember.h"
#include "ember/nn/attention.h"
#include "ember/nn/flow.h"
#include "ember/nn/wrappers.h"
#include "test_util.h"

using namespace ember;
using namespace ember::test;

namespace {
// log|det| of the Jacobian of a [1, C, H, W] -> [1, C, H, W] map, computed by autograd.
double logdet_of_jacobian(const std::function<Tensor(const Tensor&)>& f, const Tensor& x) {
  Tensor J = jacobian([&](const Tensor& flat) { return f(flat.reshape(x.sizes())).reshape({-1}); }, x.reshape({-1}));
  return slogdet(J).second.item();
}
void expect_all_near(const Tensor& a, const Tensor& b, double tol) {
  auto x = a.to_vector<double>(), y = b.to_vector<double>();
  ASSERT_EQ(x.size(), y.size());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(x[i], y[i], tol) << i;
}
}  // namespace

TEST(NnFlowLayers, ActNormInitialisesInvertsAndHasTheJacobiansLogdet) {
  nn::ActNorm a(3);
  a.to(DType::f64);
  Tensor x = add(mul(rnd({8, 3, 4, 5}, 1, DType::f64), 3.0), 2.0);
  auto [y, ld] = a.forward_logdet(x);
  for (double m : mean(y, {0, 2, 3}).to_vector<double>()) EXPECT_NEAR(m, 0.0, 1e-9);
  for (double s : ember::std(y, {0, 2, 3}, false).to_vector<double>()) EXPECT_NEAR(s, 1.0, 1e-5);
  EXPECT_EQ(a.initialized.item(), 1.0);
  expect_all_near(a.inverse(y), x, 1e-10);
  Tensor x1 = rnd({1, 3, 2, 2}, 2, DType::f64);
  EXPECT_NEAR(a.forward_logdet(x1).second.item(), logdet_of_jacobian([&](const Tensor& t) { return a(t); }, x1), 1e-9);
  expect_grads_ok([&](const TensorList& in) { return a(in[0]); }, {leaf64({2, 3, 2, 2}, 3)});
}

TEST(NnFlowLayers, Invertible1x1ConvStartsOrthogonalInvertsAndHasTheJacobiansLogdet) {
  Generator g(4);
  nn::Invertible1x1Conv c(4, &g);
  c.to(DType::f64);
  Tensor W = c.weight();
  expect_all_near(matmul(W, W.t()), eye(4, {.dtype = DType::f64}), 1e-5);  // a rotation (f32-made)
  Tensor x = rnd({2, 4, 3, 3}, 5, DType::f64);
  auto [y, ld] = c.forward_logdet(x);
  expect_all_near(c.inverse(y), x, 1e-9);
  {  // move the parameters away from the rotation, then compare with the Jacobian
    NoGrad ng;
    c.log_s.add_(rnd({4}, 6, DType::f64), 0.3);
    c.upper.add_(rnd({4, 4}, 7, DType::f64), 0.2);
  }
  Tensor x1 = rnd({1, 4, 2, 1}, 8, DType::f64);
  EXPECT_NEAR(c.forward_logdet(x1).second.item(), logdet_of_jacobian([&](const Tensor& t) { return c(t); }, x1), 1e-9);
  expect_grads_ok([&](const TensorList& in) { return c(in[0]); }, {leaf64({1, 4, 2, 2}, 9)});
  EXPECT_TRUE(gradcheck([&](const TensorList&) { return c.forward_logdet(x1).first; }, {c.lower, c.upper, c.log_s}).ok);
}

TEST(NnAttentionLayers, SinusoidalEmbeddingAndSelfAttention) {
  nn::SinusoidalEmbedding emb(8);
  Tensor t = tensor({0.0, 3.0, 100.0});
  Tensor e = emb(t);
  ASSERT_EQ(e.sizes(), (Shape{3, 8}));
  auto ev = e.to_vector<double>();
  for (int i = 0; i < 4; ++i) {  // f_i = exp(-log(10000) i / 3)
    double f = std::exp(-std::log(10000.0) * i / 3.0);
    EXPECT_NEAR(ev[1 * 8 + i], std::sin(3.0 * f), 1e-5);
    EXPECT_NEAR(ev[1 * 8 + 4 + i], std::cos(3.0 * f), 1e-5);
  }
  manual_seed(10);
  nn::SelfAttention2d att(32);
  att.to(DType::f64);
  Tensor x = rnd({2, 32, 3, 2}, 11, DType::f64);
  EXPECT_EQ(att(x).sizes(), x.sizes());
  expect_grads_ok([&](const TensorList& in) { return att(in[0]); }, {leaf64({1, 32, 2, 2}, 12)});
}

TEST(NnWrappers, WeightNormKeepsTheFunctionAndDifferentiates) {
  manual_seed(13);
  auto lin = std::make_shared<nn::Linear>(4, 3);
  lin->to(DType::f64);
  Tensor x = rnd({5, 4}, 14, DType::f64);
  Tensor before = (*lin)(x).detach();
  nn::WeightNorm wn(lin);
  expect_all_near(wn(x), before, 1e-12);  // g = ||v|| at the start: the same weight
  std::vector<std::string> names;
  for (auto& [k, v] : wn.named_parameters()) names.push_back(k);
  EXPECT_EQ(names, (std::vector<std::string>{"weight_g", "weight_v", "module.bias"}));
  EXPECT_EQ(wn.weight_g.sizes(), (Shape{3, 1}));
  expect_grads_ok([&](const TensorList& in) { return wn(in[0]); }, {leaf64({2, 4}, 15)});
  EXPECT_TRUE(gradcheck([&](const TensorList&) { return wn(x); }, {wn.weight_g, wn.weight_v}).ok);
}

TEST(NnWrappers, SpectralNormBringsTheLargestSingularValueToOne) {
  manual_seed(16);
  Generator g(17);
  auto conv = std::make_shared<nn::Conv2d>(3, 5, 3);
  conv->to(DType::f64);
  {
    NoGrad ng;
    conv->weight.mul_(7.0);
  }
  nn::SpectralNorm sn(conv, &g);
  Tensor x = rnd({1, 3, 5, 5}, 18, DType::f64);
  for (int i = 0; i < 30; ++i) sn(x);  // power iterations
  Tensor w = sn.weight().reshape({5, -1}).detach();
  // sigma of the normalised weight, by an independent power iteration on W^T W
  Tensor v = rnd({27}, 19, DType::f64);
  for (int i = 0; i < 300; ++i) v = div(matmul(w.t(), matmul(w, v)), norm(matmul(w.t(), matmul(w, v))));
  EXPECT_NEAR(norm(matmul(w, v)).item(), 1.0, 1e-3);  // 30 power iterations: converged to ~5e-5 here
  sn.eval();
  expect_grads_ok([&](const TensorList& in) { return sn(in[0]); }, {leaf64({1, 3, 4, 4}, 20)});
}
